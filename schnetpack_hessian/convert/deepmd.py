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
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from ase.data import chemical_symbols

from schnetpack_hessian.layout import as_square
from schnetpack_hessian.convert.base import (
    ConversionError,
    Entry,
    PathLike,
    Reader,
    numbers_from_symbols,
    require_energy_and_forces,
)
from schnetpack_hessian.data.io import atomic_output
from schnetpack_hessian.data.record import (
    HessianRecord,
    convert_record,
    kind_code,
    kind_name,
    validate_record,
)

__all__ = ["UNITS", "READER", "DeepmdReader", "find_systems", "write"]

UNITS = {"distance": "Ang", "energy": "eV", "forces": "eV/Ang", "hessian": "eV/Ang/Ang"}


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


def _atoms(system: Path) -> np.ndarray:
    """Atomic numbers of a system from ``type.raw`` and ``type_map.raw``."""
    types = np.loadtxt(system / "type.raw", dtype=np.int64, ndmin=1)
    type_map_file = system / "type_map.raw"
    if not type_map_file.exists():
        raise ConversionError(
            f"{system}: type_map.raw missing; element names are required"
        )
    type_map = type_map_file.read_text().split()
    if types.size and types.max() >= len(type_map):
        raise ConversionError(
            f"{system}: type index {types.max()} but type_map.raw has {len(type_map)} "
            "names"
        )
    try:
        return numbers_from_symbols([type_map[t] for t in types])
    except ConversionError as err:
        raise ConversionError(f"{system}/type_map.raw: {err}") from None


def _load_set(s: Path, n: int) -> Dict[str, np.ndarray]:
    """The arrays of one ``set.*`` folder, shapes checked against ``n`` atoms."""
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
        "kind": (nf,),
        "reaction": (nf,),
    }
    for name, shape in expected.items():
        if name not in arrays:
            continue
        a = arrays[name]
        if a.shape[:1] != (nf,):
            raise ConversionError(
                f"{s.name}/{name}.npy has {a.shape[0] if a.ndim else 0} frames, "
                f"coord.npy has {nf}"
            )
        arrays[name] = a.reshape(nf, -1) if len(shape) == 2 else a.reshape(nf)
        if arrays[name].shape != shape:
            raise ConversionError(
                f"{s}/{name}.npy has shape {arrays[name].shape}, expected {shape} for "
                f"{n} atoms (type.raw)"
            )
    if "force" not in arrays:
        raise ConversionError(f"{s}: force.npy missing")
    return arrays


def _frame(arrays: Dict[str, np.ndarray], i: int, numbers, pbc: bool) -> HessianRecord:
    n = len(numbers)
    return HessianRecord(
        numbers=numbers,
        positions=np.asarray(arrays["coord"][i]).reshape(n, 3),
        energy=float(arrays["energy"][i]),
        forces=np.asarray(arrays["force"][i]).reshape(n, 3),
        hessian=(
            as_square(np.ravel(arrays["hessian"][i]), n)
            if "hessian" in arrays
            else None
        ),
        kind=kind_name(arrays["kind"][i]) if "kind" in arrays else "other",
        reaction=int(arrays["reaction"][i]) if "reaction" in arrays else -1,
        cell=(
            np.asarray(arrays["box"][i]).reshape(3, 3)
            if "box" in arrays
            else np.zeros((3, 3))
        ),
        pbc=np.array([pbc and "box" in arrays] * 3),
    )


class DeepmdReader(Reader):
    """deepmd-kit system folders (searched recursively for ``type.raw``), eV / Å;
    each system is one input file, frames counted over its sets in order."""

    name = "deepmd"
    units = UNITS
    metadata = {"source": "deepmd"}

    def detect(self, path: Path) -> bool:
        """True for a system folder (``type.raw``) or a folder of systems."""
        path = Path(path)
        return path.is_dir() and bool(find_systems(path, strict=False))

    def files(self, path: Path) -> List[Path]:
        return find_systems(path)

    def count(self, path: Path) -> Optional[int]:
        sets = sorted(path.glob("set.*"))
        if not sets:
            raise ConversionError(f"{path}: no set.* folders")
        return sum(int(np.load(s / "coord.npy", mmap_mode="r").shape[0]) for s in sets)

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        numbers = _atoms(path)
        pbc = not (path / "nopbc").exists()
        for s in sorted(path.glob("set.*")):
            nf = int(np.load(s / "coord.npy", mmap_mode="r").shape[0])
            loaded: Dict[str, Dict[str, np.ndarray]] = {}

            def load(i: int, s: Path = s, loaded=loaded) -> HessianRecord:
                if "arrays" not in loaded:
                    loaded["arrays"] = _load_set(s, len(numbers))
                return _frame(loaded["arrays"], i, numbers, pbc)

            for i in range(nf):
                yield f"{s.name} frame {i}", lambda i=i, load=load: load(i)


READER = DeepmdReader()


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
    mkdir: bool = True,
) -> int:
    """Write records as deepmd-kit systems under the folder ``path``, in eV / Å.

    One system per atom list (``sys-0000``, ...); frames without Hessian go to sets
    without ``hessian.npy``.  The folder appears only when complete (``mkdir``:
    create a missing parent directory, else an error).

    Returns:
        Number of frames written.

    Raises:
        ConversionError: a periodic structure (not supported here), or one without
            energy or forces (deepmd-kit sets hold both for every frame).
    """
    systems: "OrderedDict[Tuple[int, ...], _SystemBuffer]" = OrderedDict()
    n = 0
    with atomic_output(path, overwrite, directory=True, mkdir=mkdir) as tmp:
        for i, rec in enumerate(records):
            rec, _ = validate_record(
                rec, *((None, None) if rec.origin else (path, i)), units=units
            )
            if rec.pbc.any():
                raise ConversionError(
                    f"{path}, structure {i}: periodic structures are not supported"
                )
            require_energy_and_forces(rec, "deepmd-kit", path, i)
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
