"""Hessian QM9 (Williams et al., Sci. Data 12, 9 (2025)) as distributed on figshare.

The archive ``hessian_qm9_DatasetDict.zip`` (figshare 10.6084/m9.figshare.26363959) is a
Hugging Face ``datasets.DatasetDict`` saved to disk: a root folder with
``dataset_dict.json`` and one folder per split, ``vacuum``, ``thf``, ``toluene``,
``water`` (the same 41,645 QM9 molecules in vacuum and in three implicit solvents),
each with Arrow IPC *stream* shards ``data-0000k-of-0000n.arrow`` (plus
``dataset_info.json`` and ``state.json``).  One row per molecule:

================  ==================  ==========================================
column            per row             unit
================  ==================  ==========================================
``atomic_numbers`` (N,)               –
``positions``     (N, 3)              Å
``energy``        scalar              eV
``forces``        (N, 3)              eV/Å
``hessian``       (N, 3, N, 3)        eV/Å²
``frequencies``   (3N, 2)             cm⁻¹ (used here only to check the Hessian)
``normal_modes``  (3N, 3N)            ignored
``label``         string              QM9 name, e.g. ``dsgdb9nsd_045682``
================  ==================  ==========================================

Where each fact comes from is listed in ``docs/DATA.md`` (data card).  The Hessian's
unit is the one fact not read from a file of the authors or of a curator; every
structure's Hessian is therefore checked against the file's own harmonic frequencies
(the largest wavenumber of the mass-weighted Hessian, taken as eV/Å², must match the
largest stored one within :data:`FREQUENCY_RTOL`), and a mismatch stops the
conversion.  The splits are different potential energy surfaces (solvent models), so
one conversion reads one split.  The ColabFit copy (``colabfit/Hessian_QM9``, parquet)
is not read: where it keeps the Hessian could not be established.
"""

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
from ase.data import atomic_masses

from schnetpack_hessian.layout import as_square
from schnetpack_hessian.convert.base import ConversionError, Entry, Reader
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.vibrations import frequencies as harmonic_frequencies

__all__ = ["UNITS", "READER", "HessianQM9Reader", "FREQUENCY_RTOL", "arrow_shards"]

#: Units of the Hessian QM9 columns (paper, Table 1; see docs/DATA.md).
UNITS = {"distance": "Ang", "energy": "eV", "forces": "eV/Ang", "hessian": "eV/Ang/Ang"}
METADATA = {"source": "Hessian QM9", "level_of_theory": "wB97X/6-31G*"}
#: Columns a row must have.
COLUMNS = ("atomic_numbers", "positions", "energy", "forces", "hessian", "frequencies")
#: Largest relative difference allowed between the largest harmonic wavenumber of the
#: stored Hessian (taken as eV/Å²) and the largest stored wavenumber; a Hessian in
#: another unit is off by a factor ≥ 1.9 in wavenumber (eV/Bohr²: 0.53; kcal/mol/Å²:
#: 4.8; Hartree/Bohr²: 9.9).
FREQUENCY_RTOL: float = 0.02


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
    except ImportError as err:
        raise ConversionError(
            "reading Hessian QM9 needs pyarrow: pip install "
            "'schnetpack-hessian[hessian-qm9]'"
        ) from err
    return pyarrow


def arrow_shards(path: Path) -> List[Path]:
    """The Arrow shards of one input: a ``.arrow`` file, or a split folder.

    Raises:
        ConversionError: the DatasetDict root (several splits: pick one), or a
            folder without ``*.arrow`` shards.
    """
    path = Path(path)
    if not path.is_dir():
        return [path]
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError, TypeError) as err:
            raise ConversionError(
                f"{path}/dataset_dict.json: not a DatasetDict index ({err})"
            ) from err
        raise ConversionError(
            f"{path}: holds the splits {list(splits)}, different potential energy "
            "surfaces (vacuum and implicit solvents); convert one split at a time, "
            f"e.g. {path / str(splits[0])}"
        )
    shards = sorted(path.glob("*.arrow"))
    if not shards:
        raise ConversionError(f"{path}: no Arrow shards (*.arrow) in this folder")
    return shards


def _open_stream(path: Path):
    pa = _pyarrow()
    try:
        return pa.ipc.open_stream(str(path))
    except (pa.ArrowInvalid, OSError) as err:
        raise ConversionError(
            f"{path}: not an Arrow IPC stream as datasets' save_to_disk writes it "
            f"({err})"
        ) from err


def _check_schema(path: Path, names: Sequence[str]):
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ConversionError(
            f"{path}: not a Hessian QM9 shard, it lacks the columns {missing} (has "
            f"{list(names)})"
        )


def _array(row: Dict[str, Any], key: str, shape: tuple) -> np.ndarray:
    value = np.asarray(row[key], dtype=np.float64)
    if value.shape != shape:
        raise ConversionError(f"{key} has shape {value.shape}, expected {shape}")
    return value


def check_frequencies(
    hessian: np.ndarray,
    numbers: np.ndarray,
    positions: np.ndarray,
    stored: np.ndarray,
    rtol: float = FREQUENCY_RTOL,
):
    """The largest wavenumber of ``hessian`` [eV/Å²] matches the source's own.

    Raises:
        ConversionError: they differ by more than ``rtol`` (relative), naming both.
    """
    stored = np.abs(np.asarray(stored, dtype=np.float64))
    if stored.size == 0 or not np.isfinite(stored).all():
        raise ConversionError("frequencies are empty or not finite")
    masses = atomic_masses[np.asarray(numbers)]
    ours = float(np.max(np.abs(harmonic_frequencies(hessian, positions, masses))))
    theirs = float(stored.max())
    if abs(ours - theirs) > rtol * theirs:
        raise ConversionError(
            f"the Hessian, read as eV/Ang/Ang, gives a largest harmonic wavenumber of "
            f"{ours:.1f} cm^-1, the file's frequencies {theirs:.1f} cm^-1 (ratio "
            f"{ours / theirs:.3g}): its Hessian is not in eV/Ang/Ang, or the row is "
            "corrupt"
        )


def _to_record(row: Dict[str, Any]) -> HessianRecord:
    z = np.asarray(row["atomic_numbers"])
    if z.ndim != 1 or z.dtype.kind not in "iu":
        raise ConversionError(
            f"atomic_numbers has shape {z.shape} and dtype {z.dtype}, expected (N,) "
            "integers"
        )
    n = len(z)
    positions = _array(row, "positions", (n, 3))
    hessian = as_square(_array(row, "hessian", (n, 3, n, 3)), n)
    if n > 1:
        check_frequencies(hessian, z, positions, row["frequencies"])
    energy = np.asarray(row["energy"], dtype=np.float64)
    if energy.size != 1:
        raise ConversionError(f"energy has shape {energy.shape}, expected ()")
    return HessianRecord(
        numbers=z.astype(np.int64),
        positions=positions,
        energy=float(energy.reshape(-1)[0]),
        forces=_array(row, "forces", (n, 3)),
        hessian=hessian,
        kind="other",
        reaction=-1,
    )


class HessianQM9Reader(Reader):
    """One split of Hessian QM9 (its folder, or single ``.arrow`` shards), eV / Å."""

    name = "hessian-qm9"
    units = UNITS
    metadata = METADATA

    def detect(self, path: Path) -> bool:
        """True for a ``.arrow`` shard, a folder of them, or the DatasetDict root
        (which :meth:`files` then refuses, naming its splits)."""
        path = Path(path)
        if path.is_dir():
            return (path / "dataset_dict.json").is_file() or any(path.glob("*.arrow"))
        return path.suffix == ".arrow"

    def files(self, path: Path) -> List[Path]:
        return arrow_shards(path)

    def prepare(self, files: Sequence[Path], options: Dict[str, Any]) -> Dict[str, Any]:
        """Checks every shard's columns; all shards must come from one split."""
        for p in files:
            _check_schema(p, _open_stream(p).schema.names)
        splits = sorted({p.parent.name for p in files})
        if len(splits) > 1:
            raise ConversionError(
                f"the inputs come from the splits {splits}, different potential "
                "energy surfaces (vacuum and implicit solvents); convert one at a time"
            )
        return {"metadata": {"split": splits[0]}}

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        reader = _open_stream(path)
        for batch in reader:
            for row in batch.to_pylist():
                label = row.get("label")
                yield (
                    None if label is None else str(label),
                    lambda row=row: _to_record(row),
                )

    def count(self, path: Path) -> Optional[int]:
        return None


READER = HessianQM9Reader()
