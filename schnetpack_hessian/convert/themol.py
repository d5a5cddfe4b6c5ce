"""THEMol (ByteDance Seed, 2026): the ``Hessian`` and ``HessianRelax`` subsets.

Layout as the THEMol repository documents it (``moleculedataset/README.md``, checked by
its ``moleculedataset/tests/test_hessian.py`` and ``test_relax.py``; read with
``examples/read_hessian.py`` and ``read_hessian_relax.py``).  Each subset is a folder
of HDF5 shards (``Hessian/hessian_<k>.h5``, ``HessianRelax/relax_<k>.h5``) plus a CSV
index; every shard holds one group per molecule, keyed by a UUID:

``Hessian`` (optimised geometries, one Hessian each, no energy or forces)::

    /<uuid>/mapped_nonisomeric_smiles, mapped_isomeric_smiles   utf-8 strings
            atomic_numbers   (N, 1)    int32
            coords           (N, 3)    float64   [Å]
            hessian          (3N, 3N)  float64   [kcal/mol/Å²]

``HessianRelax`` (the optimisation trajectories, energies and forces, no Hessian)::

    /<uuid>/mapped_nonisomeric_smiles, mapped_isomeric_smiles, atomic_numbers (N, 1)
            step 0/ energy (scalar float64 [kcal/mol]), coords (N, 3) [Å],
                    forces (N, 3) [kcal/mol/Å]
            step 1/ ...

Units for all subsets: Å, kcal/mol, kcal/mol/Å, kcal/mol/Å² (README "Units"); level
of theory B3LYP-D3(BJ)/DZVP for both subsets (``moleculedataset/stat/
dataset_size_count.csv``).  Structures of the Hessian subset are stored without
energy and forces (NaN, see :mod:`~schnetpack_hessian.data.storage`), those of the
relax subset without Hessian.  ``kind`` is ``other`` (neither subset is reactive);
relax steps get the molecule's index in its shard as ``reaction`` so that
``splitting="reaction"`` keeps a trajectory in one split; Hessian structures get −1.

The files do not store the total charge or spin (the SMILES imply them; THEMol holds
ions); the training file does not carry them either.
"""

import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import h5py
import numpy as np

from schnetpack_hessian.convert.base import (
    FORCES_SIGN,
    ConversionError,
    Entry,
    Reader,
    decide_force_sign,
    is_hdf5,
    open_hdf5,
)
from schnetpack_hessian.data.h5file import FORMAT_NAME
from schnetpack_hessian.data.record import HessianRecord

__all__ = ["UNITS", "READER", "THEMolReader", "group_subset"]

#: Units of every THEMol subset (``moleculedataset/README.md``).
UNITS = {
    "distance": "Ang",
    "energy": "kcal/mol",
    "forces": "kcal/mol/Ang",
    "hessian": "kcal/mol/Ang/Ang",
}
METADATA = {"source": "THEMol", "level_of_theory": "B3LYP-D3(BJ)/DZVP"}
_STEP = re.compile(r"^step (\d+)$")
#: The subsets' names in THEMol's documentation (stored as metadata ``subsets``).
_SUBSET_NAMES = {"hessian": "Hessian", "relax": "HessianRelax"}


def _steps(group: h5py.Group) -> List[str]:
    """The ``step k`` subgroups of a relax entry, in the order of ``k``."""
    steps = [k for k in group.keys() if _STEP.match(k)]
    return sorted(steps, key=lambda k: int(_STEP.match(k).group(1)))


def group_subset(name: str, item: Any) -> str:
    """``"hessian"`` or ``"relax"``: which THEMol subset a root entry belongs to.

    Raises:
        ConversionError: the entry is in neither layout (named with what it holds).
    """
    if not isinstance(item, h5py.Group):
        raise ConversionError(
            f"root entry {name!r} is a dataset; THEMol files hold one group per "
            "molecule (/<uuid>/atomic_numbers, coords, hessian or 'step k' groups)"
        )
    keys = set(item.keys())
    if "atomic_numbers" in keys and "hessian" in keys and "coords" in keys:
        return "hessian"
    if "atomic_numbers" in keys and _steps(item):
        return "relax"
    raise ConversionError(
        f"group {name!r} is neither a THEMol Hessian entry (atomic_numbers, coords, "
        "hessian) nor a HessianRelax entry (atomic_numbers and 'step k' groups); it "
        f"holds {sorted(keys)[:8]}"
    )


def _numbers(group: h5py.Group) -> np.ndarray:
    z = np.asarray(group["atomic_numbers"][()])
    if z.ndim != 2 or z.shape[1] != 1 or z.dtype.kind not in "iu":
        raise ConversionError(
            f"atomic_numbers has shape {z.shape} and dtype {z.dtype}, expected (N, 1) "
            "integers"
        )
    return z.reshape(-1).astype(np.int64)


def _array(group: h5py.Group, key: str, shape: tuple) -> np.ndarray:
    value = np.asarray(group[key][()])
    if value.shape != shape or value.dtype.kind != "f":
        raise ConversionError(
            f"{key} has shape {value.shape} and dtype {value.dtype}, expected {shape} "
            "floats"
        )
    return value.astype(np.float64, copy=False)


def _hessian_record(group: h5py.Group) -> HessianRecord:
    z = _numbers(group)
    n = len(z)
    return HessianRecord(
        numbers=z,
        positions=_array(group, "coords", (n, 3)),
        energy=None,
        forces=None,
        hessian=_array(group, "hessian", (3 * n, 3 * n)),
        kind="other",
        reaction=-1,
    )


def _relax_records(
    group: h5py.Group, reaction: int, sign: float
) -> Iterator[HessianRecord]:
    z = _numbers(group)
    n = len(z)
    for key in _steps(group):
        step = group[key]
        missing = [k for k in ("energy", "coords", "forces") if k not in step]
        if missing:
            raise ConversionError(f"{key} lacks {missing}")
        energy = np.asarray(step["energy"][()])
        if energy.size != 1:
            raise ConversionError(f"{key}/energy has shape {energy.shape}, expected ()")
        yield HessianRecord(
            numbers=z,
            positions=_array(step, "coords", (n, 3)),
            energy=float(energy.reshape(-1)[0]),
            forces=sign * _array(step, "forces", (n, 3)),
            kind="other",
            reaction=reaction,
        )


def _shard_key(path: Path):
    """``hessian_10.h5`` after ``hessian_9.h5``."""
    digits = re.findall(r"\d+", path.stem)
    return (path.stem.rstrip("0123456789"), int(digits[-1]) if digits else -1, path)


class THEMolReader(Reader):
    """THEMol's ``Hessian`` and ``HessianRelax`` shards (files or their folders),
    kcal/mol / Å."""

    name = "themol"
    units = UNITS
    metadata = METADATA
    options = {"forces_sign": FORCES_SIGN}

    def detect(self, path: Path) -> bool:
        """True for an HDF5 file (or a folder of them) whose first root group is a
        THEMol molecule entry."""
        path = Path(path)
        if path.is_dir():
            files = sorted(path.glob("*.h5"))
            return bool(files) and self.detect(files[0])
        if not is_hdf5(path):
            return False
        with open_hdf5(path) as f:
            if f.attrs.get("format") == FORMAT_NAME:
                return False
            first = next(iter(f.keys()), None)
            if first is None:
                return False
            try:
                group_subset(first, f[first])
            except ConversionError:
                return False
            return True

    def files(self, path: Path) -> List[Path]:
        path = Path(path)
        if not path.is_dir():
            return [path]
        files = sorted(path.glob("*.h5"), key=_shard_key)
        if not files:
            raise ConversionError(f"{path}: no THEMol shards (*.h5) in this folder")
        return files

    def _subset(self, path: Path, f: h5py.File) -> str:
        """The subset of a shard, from its first group (checked as a THEMol shard).

        Raises:
            ConversionError: not a THEMol shard (named with the file).
        """
        if f.attrs.get("format") == FORMAT_NAME:
            raise ConversionError(
                f"{path}: is a schnetpack-hessian training file, not a THEMol shard"
            )
        first = next(iter(f.keys()), None)
        if first is None:
            raise ConversionError(f"{path}: holds no THEMol molecule groups")
        try:
            return group_subset(first, f[first])
        except ConversionError as err:
            raise ConversionError(f"{path}: {err}") from err

    def count(self, path: Path) -> Optional[int]:
        """Molecules of a Hessian shard (one structure each); ``None`` for relax
        shards, whose step counts are known only group by group."""
        with open_hdf5(path) as f:
            if self._subset(path, f) == "hessian":
                return len(f)
        return None

    def prepare(self, files: Sequence[Path], options: Dict[str, Any]) -> Dict[str, Any]:
        """Checks that every input is a THEMol shard and decides the force sign of
        relax shards on their first trajectories (neighbouring optimisation steps)."""
        relax, subsets = [], set()
        for p in files:
            with open_hdf5(p) as f:
                subset = self._subset(p, f)
            subsets.add(_SUBSET_NAMES[subset])
            if subset == "relax":
                relax.append(p)
        metadata: Dict[str, Any] = {"subsets": sorted(subsets)}
        if not relax:
            return {"sign": 1.0, "metadata": metadata}

        def trajectories():
            for p in relax:
                with open_hdf5(p) as f:
                    for i, name in enumerate(f.keys()):
                        if i >= 50:
                            break
                        if group_subset(name, f[name]) == "relax":
                            yield list(_relax_records(f[name], 0, 1.0))

        sign, metadata["forces_convention"] = decide_force_sign(
            trajectories(), options["forces_sign"], ", ".join(map(str, relax))
        )
        return {"sign": sign, "metadata": metadata}

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        with open_hdf5(path) as f:
            for index, name in enumerate(f.keys()):
                group = f[name]
                if group_subset(name, group) == "hessian":
                    yield name, lambda group=group: _hessian_record(group)
                    continue
                steps = _steps(group)
                records = _relax_records(group, index, prepared["sign"])
                for key in steps:
                    yield f"{name}/{key}", lambda records=records: next(records)


READER = THEMolReader()
