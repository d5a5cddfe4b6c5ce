"""HORM: LMDB files of pickled ``torch_geometric.data.Data`` records (no PyG needed).

Each LMDB entry ``b"<i>"`` (plus ``b"length"`` → pickled int) is a pickled PyG ``Data``
whose storage maps

==============  ============  ============================================
key             shape         meaning [unit]
==============  ============  ============================================
``pos``         (N, 3) f32    positions [Å]
``charges``     (N,) int      **atomic numbers**
``energy``      () f32        total energy [eV]
``ae``          () f32        energy minus fitted element offsets [eV]
``forces``      (N, 3) f32    forces −dE/dR [eV/Å]
``hessian``     (9N²,) f32    row-major (3N, 3N) Hessian [eV/Å²]
``one_hot``     (N, 5)        element one-hot (ignored)
``natoms``      ()            N
``rxn``         ()            data-set tag (ignored unless ``reaction_key="rxn"``)
==============  ============  ============================================

The records are unpickled with :class:`HormUnpickler`, which maps the
``torch_geometric`` classes to minimal stand-ins and refuses every class outside
``torch``, ``numpy`` and ``collections``.
"""

import io
import pickle
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from schnetpack_hessian.convert.base import (
    ConversionError,
    PathLike,
    Source,
    check_kind,
    declared_units,
)
from schnetpack_hessian.data.record import HessianRecord

__all__ = ["UNITS", "HormUnpickler", "detect", "read", "load_record", "lmdb_files"]

UNITS = {"distance": "Ang", "energy": "eV", "forces": "eV/Ang", "hessian": "eV/Ang/Ang"}
METADATA = {"source": "HORM", "level_of_theory": "wB97X/6-31G(d)"}
_ALLOWED = ("torch", "numpy", "collections", "copyreg", "_codecs")


class _PygObject:
    """Stand-in for PyG's ``Data`` and its storages: keeps the pickled state."""

    def __setstate__(self, state: Dict[str, Any]):
        self.__dict__.update(state)


class HormUnpickler(pickle.Unpickler):
    """Unpickler for PyG records without ``torch_geometric`` installed."""

    def find_class(self, module: str, name: str):
        if module == "torch_geometric" or module.startswith("torch_geometric."):
            return _PygObject
        if module.split(".")[0] in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def load_record(raw: bytes) -> Dict[str, np.ndarray]:
    """The key → array mapping of one pickled PyG ``Data`` record (PyG 1.x or 2.x)."""
    data = HormUnpickler(io.BytesIO(raw)).load()
    state = getattr(data, "__dict__", {})
    store = state.get("_store")
    mapping = getattr(store, "_mapping", None) if store is not None else None
    if mapping is None:
        mapping = {k: v for k, v in state.items() if not k.startswith("_")}
    return {k: _as_array(v) for k, v in mapping.items()}


def lmdb_files(path: PathLike) -> List[Path]:
    """The LMDB files of an input: the file itself or the ``*.lmdb`` in a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.lmdb"))
        if not files:
            raise ConversionError(f"{path}: no *.lmdb files in this folder")
        return files
    return [path]


def detect(path: PathLike) -> bool:
    """True for ``*.lmdb`` files or folders of them."""
    path = Path(path)
    return path.suffix == ".lmdb" or (path.is_dir() and any(path.glob("*.lmdb")))


def _open(path: Path):
    try:
        import lmdb
    except ImportError as err:
        raise ConversionError(
            "reading HORM needs the lmdb package: pip install 'schnetpack-hessian[horm]'"
        ) from err
    return lmdb.open(
        str(path),
        subdir=False,
        readonly=True,
        lock=False,
        readahead=False,
        meminit=False,
    )


def _length(env, path: Path) -> int:
    with env.begin() as txn:
        raw = txn.get(b"length")
    if raw is not None:
        return int(pickle.loads(raw))
    return int(env.stat()["entries"])


def read(
    paths: Sequence[PathLike],
    energy_unit: Optional[str] = None,
    distance_unit: Optional[str] = None,
    kind: Optional[str] = None,
    energy_key: str = "energy",
    reaction_key: Optional[str] = None,
    **_: Any,
) -> Source:
    """Read HORM LMDB files.

    Args:
        paths: ``.lmdb`` files or folders of them.
        energy_unit: must be eV if given.
        distance_unit: must be Å if given.
        kind: ``kind`` label of every structure (default ``other``).
        energy_key: ``"energy"`` (total energy) or ``"ae"`` (minus element offsets).
        reaction_key: record key to use as ``reaction`` label (default: none, -1).

    Raises:
        ConversionError: missing keys or shapes that do not fit the atom count.
    """
    units = declared_units("HORM", UNITS, energy_unit, distance_unit)
    check_kind(kind, ", ".join(map(str, paths)))
    if energy_key not in ("energy", "ae"):
        raise ConversionError(
            f"energy_key must be 'energy' or 'ae', not {energy_key!r}"
        )
    files = [f for p in paths for f in lmdb_files(p)]
    total = 0
    for f in files:
        env = _open(f)
        total += _length(env, f)
        env.close()

    def records() -> Iterator[HessianRecord]:
        for f in files:
            env = _open(f)
            try:
                n_records = _length(env, f)
                with env.begin() as txn:
                    for i in range(n_records):
                        raw = txn.get(str(i).encode("ascii"))
                        if raw is None:
                            raise ConversionError(f"{f}: record {i} missing")
                        yield _to_record(
                            load_record(raw), f, i, energy_key, reaction_key, kind
                        )
            finally:
                env.close()

    metadata = dict(METADATA, energy_key=energy_key)
    return Source(records(), units, metadata, total, ", ".join(map(str, paths)))


def _to_record(
    d: Dict[str, np.ndarray],
    path: Path,
    index: int,
    energy_key: str,
    reaction_key: Optional[str],
    kind: Optional[str],
) -> HessianRecord:
    missing = [k for k in ("pos", "charges", energy_key, "forces") if k not in d]
    if missing:
        raise ConversionError(f"{path}, structure {index}: record lacks {missing}")
    pos = d["pos"]
    n = pos.shape[0]
    hessian = d.get("hessian")
    if hessian is not None:
        if hessian.size != 9 * n * n:
            raise ConversionError(
                f"{path}, structure {index}: hessian has {hessian.size} values, expected "
                f"9N² = {9 * n * n} for {n} atoms"
            )
        hessian = hessian.reshape(3 * n, 3 * n)
    reaction = -1
    if reaction_key is not None:
        if reaction_key not in d:
            raise ConversionError(f"{path}, structure {index}: no {reaction_key!r} key")
        reaction = int(np.asarray(d[reaction_key]).reshape(-1)[0])
    return HessianRecord(
        numbers=np.asarray(d["charges"]).astype(np.int64).reshape(-1),
        positions=pos,
        energy=float(np.asarray(d[energy_key]).reshape(-1)[0]),
        forces=d["forces"],
        hessian=hessian,
        kind=kind or "other",
        reaction=reaction,
    )
