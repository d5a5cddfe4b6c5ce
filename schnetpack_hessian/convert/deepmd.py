"""deepmd-kit ``npy`` systems, both directions.

A system folder holds ``type.raw`` (one type index per atom, in file order; not
necessarily sorted), ``type_map.raw`` (element names), optional ``nopbc`` and
``set.*/`` folders with ``coord.npy`` (nframes, 3N) [Å], ``energy.npy`` (nframes,)
[eV], ``force.npy`` (nframes, 3N) [eV/Å], ``hessian.npy`` (nframes, 9N²) [eV/Å²] and
optionally ``box.npy`` (nframes, 9).  A set without ``hessian.npy`` holds structures
without Hessian (deepmd-kit then sets ``find_hessian = 0``).  Our writer also stores
``kind.npy`` and ``reaction.npy`` (int labels; deepmd-kit ignores them).

Atoms are kept in file order; the Hessian rows follow ``coord.npy``.
"""

from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from ase.data import chemical_symbols

from schnetpack_hessian.convert.base import (
    ConversionError,
    PathLike,
    Source,
    check_kind,
    declared_units,
    numbers_from_symbols,
)
from schnetpack_hessian.data.io import atomic_output
from schnetpack_hessian.data.record import (
    HessianRecord,
    convert_record,
    kind_code,
    kind_name,
    validate_record,
)

__all__ = ["UNITS", "detect", "find_systems", "read", "write"]

UNITS = {"distance": "Ang", "energy": "eV", "forces": "eV/Ang", "hessian": "eV/Ang/Ang"}


def detect(path: PathLike) -> bool:
    """True for a system folder (``type.raw``) or a folder of systems."""
    path = Path(path)
    return path.is_dir() and bool(find_systems(path, strict=False))


def find_systems(path: PathLike, strict: bool = True) -> List[Path]:
    """System folders at or below ``path`` (sorted).

    Raises:
        ConversionError: none found (``strict``).
    """
    path = Path(path)
    systems = sorted(p.parent for p in path.rglob("type.raw"))
    if strict and not systems:
        raise ConversionError(f"{path}: no deepmd system (type.raw) found")
    return systems


def _system_frames(system: Path, kind: Optional[str]) -> Iterator[HessianRecord]:
    types = np.loadtxt(system / "type.raw", dtype=np.int64, ndmin=1)
    type_map_file = system / "type_map.raw"
    if not type_map_file.exists():
        raise ConversionError(
            f"{system}: type_map.raw missing; element names are required"
        )
    type_map = type_map_file.read_text().split()
    if types.size and types.max() >= len(type_map):
        raise ConversionError(
            f"{system}: type index {types.max()} but type_map.raw has {len(type_map)} names"
        )
    numbers = numbers_from_symbols([type_map[t] for t in types], str(system))
    n = len(numbers)
    pbc = not (system / "nopbc").exists()
    sets = sorted(system.glob("set.*"))
    if not sets:
        raise ConversionError(f"{system}: no set.* folders")
    for s in sets:
        coord = np.load(s / "coord.npy", mmap_mode="r")
        nf = coord.shape[0]
        arrays = {"coord": coord, "energy": np.load(s / "energy.npy").reshape(-1)}
        for name in ("force", "hessian", "box", "kind", "reaction"):
            if (s / f"{name}.npy").exists():
                arrays[name] = np.load(s / f"{name}.npy", mmap_mode="r")
        expected = {
            "coord": (nf, 3 * n),
            "energy": (nf,),
            "force": (nf, 3 * n),
            "hessian": (nf, 9 * n * n),
            "box": (nf, 9),
        }
        for name, shape in expected.items():
            if name in arrays:
                arrays[name] = (
                    arrays[name].reshape(nf, -1) if name != "energy" else arrays[name]
                )
                if arrays[name].shape != shape:
                    raise ConversionError(
                        f"{s}/{name}.npy has shape {arrays[name].shape}, expected {shape} "
                        f"for {n} atoms (type.raw)"
                    )
        if "force" not in arrays:
            raise ConversionError(f"{s}: force.npy missing")
        for i in range(nf):
            box = (
                arrays["box"][i].reshape(3, 3) if "box" in arrays else np.zeros((3, 3))
            )
            hessian = (
                arrays["hessian"][i].reshape(3 * n, 3 * n)
                if "hessian" in arrays
                else None
            )
            yield HessianRecord(
                numbers=numbers,
                positions=arrays["coord"][i].reshape(n, 3),
                energy=float(arrays["energy"][i]),
                forces=arrays["force"][i].reshape(n, 3),
                hessian=hessian,
                kind=kind
                or (
                    kind_name(arrays["kind"].reshape(-1)[i], str(s), i)
                    if "kind" in arrays
                    else "other"
                ),
                reaction=(
                    int(arrays["reaction"].reshape(-1)[i])
                    if "reaction" in arrays
                    else -1
                ),
                cell=box,
                pbc=np.array([pbc and "box" in arrays] * 3),
            )


def read(
    paths: Sequence[PathLike],
    energy_unit: Optional[str] = None,
    distance_unit: Optional[str] = None,
    kind: Optional[str] = None,
    **_: Any,
) -> Source:
    """Read deepmd-kit systems (folders, searched recursively for ``type.raw``).

    Units are deepmd-kit's eV / Å convention (``--energy-unit`` may only confirm it).

    Raises:
        ConversionError: missing files or shapes that do not fit ``type.raw``.
    """
    units = declared_units("deepmd", UNITS, energy_unit, distance_unit)
    check_kind(kind, ", ".join(map(str, paths)))
    systems = [s for p in paths for s in find_systems(p)]
    total = sum(
        int(np.load(s / "coord.npy", mmap_mode="r").shape[0])
        for sys_ in systems
        for s in sorted(sys_.glob("set.*"))
    )

    def records() -> Iterator[HessianRecord]:
        for system in systems:
            yield from _system_frames(system, kind)

    return Source(
        records(), units, {"source": "deepmd"}, total, ", ".join(map(str, paths))
    )


class _SystemBuffer:
    """Frames of one system (one atom list) waiting to be written as ``set.*``."""

    def __init__(self, folder: Path, numbers: np.ndarray, type_map: List[str]):
        self.folder = folder
        self.n_sets = 0
        self.frames: Dict[bool, List[HessianRecord]] = {True: [], False: []}
        folder.mkdir(parents=True)
        np.savetxt(
            folder / "type.raw",
            [type_map.index(chemical_symbols[z]) for z in numbers],
            fmt="%d",
        )
        (folder / "type_map.raw").write_text("\n".join(type_map) + "\n")
        (folder / "nopbc").touch()

    def add(self, rec: HessianRecord, set_size: int):
        key = rec.hessian is not None
        self.frames[key].append(rec)
        if len(self.frames[key]) >= set_size:
            self.flush(key)

    def flush(self, key: bool):
        frames, self.frames[key] = self.frames[key], []
        if not frames:
            return
        s = self.folder / f"set.{self.n_sets:03d}"
        self.n_sets += 1
        s.mkdir()
        np.save(s / "coord.npy", np.stack([np.ravel(r.positions) for r in frames]))
        np.save(
            s / "energy.npy", np.array([r.energy for r in frames], dtype=np.float64)
        )
        np.save(s / "force.npy", np.stack([np.ravel(r.forces) for r in frames]))
        if key:
            np.save(s / "hessian.npy", np.stack([np.ravel(r.hessian) for r in frames]))
        np.save(
            s / "kind.npy",
            np.array([kind_code(r.kind) for r in frames], dtype=np.int64),
        )
        np.save(
            s / "reaction.npy", np.array([r.reaction for r in frames], dtype=np.int64)
        )


def write(
    path: PathLike,
    records: Iterable[HessianRecord],
    units: Dict[str, str],
    overwrite: bool = False,
    set_size: int = 5000,
    **_: Any,
) -> int:
    """Write records as deepmd-kit systems under the folder ``path``, in eV / Å.

    One system per atom list (``sys-0000``, ...); frames without Hessian go to sets
    without ``hessian.npy``.  The folder appears only when complete.

    Returns:
        Number of frames written.

    Raises:
        ConversionError: a periodic structure (not supported here).
    """
    systems: "OrderedDict[Tuple[int, ...], _SystemBuffer]" = OrderedDict()
    n = 0
    with atomic_output(path, overwrite, directory=True) as tmp:
        for i, rec in enumerate(records):
            rec, _ = validate_record(rec, str(path), i)
            if rec.pbc.any():
                raise ConversionError(
                    f"{path}, structure {i}: periodic structures are not supported"
                )
            rec = convert_record(rec, units, UNITS)
            key = tuple(int(z) for z in rec.numbers)
            if key not in systems:
                type_map = sorted(
                    {chemical_symbols[z] for z in key},
                    key=lambda s: chemical_symbols.index(s),
                )
                systems[key] = _SystemBuffer(
                    tmp / f"sys-{len(systems):04d}", rec.numbers, type_map
                )
            systems[key].add(rec, set_size)
            n += 1
        for buf in systems.values():
            buf.flush(True)
            buf.flush(False)
    return n
