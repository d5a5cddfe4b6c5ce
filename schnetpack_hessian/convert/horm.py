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
    Entry,
    Option,
    PathLike,
    Reader,
)
from schnetpack_hessian.data.record import HessianRecord

__all__ = [
    "UNITS",
    "READER",
    "HormReader",
    "HormUnpickler",
    "load_record",
    "lmdb_files",
]

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
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name} (only torch_geometric, torch and "
            "numpy classes are loaded from HORM records)"
        )


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


def _length(env) -> int:
    with env.begin() as txn:
        raw = txn.get(b"length")
    if raw is not None:
        return int(HormUnpickler(io.BytesIO(raw)).load())
    return int(env.stat()["entries"])


def _to_record(
    d: Dict[str, np.ndarray], energy_key: str, reaction_key: Optional[str]
) -> HessianRecord:
    missing = [k for k in ("pos", "charges", energy_key, "forces") if k not in d]
    if missing:
        raise ConversionError(f"record lacks {missing}")
    pos = d["pos"]
    n = pos.shape[0]
    hessian = d.get("hessian")
    if hessian is not None:
        if hessian.size != 9 * n * n:
            raise ConversionError(
                f"hessian has {hessian.size} values, expected 9N² = {9 * n * n} for "
                f"{n} atoms"
            )
        hessian = hessian.reshape(3 * n, 3 * n)
    reaction = -1
    if reaction_key is not None:
        if reaction_key not in d:
            raise ConversionError(f"no {reaction_key!r} key")
        reaction = np.asarray(d[reaction_key]).reshape(-1)[0].item()
    return HessianRecord(
        numbers=np.asarray(d["charges"]).astype(np.int64).reshape(-1),
        positions=pos,
        energy=float(np.asarray(d[energy_key]).reshape(-1)[0]),
        forces=d["forces"],
        hessian=hessian,
        reaction=reaction,
    )


class HormReader(Reader):
    """HORM LMDB files (or folders of them): pickled PyG ``Data``, eV / Å."""

    name = "horm"
    units = UNITS
    metadata = METADATA
    options = {
        "energy_key": Option(
            "energy",
            "'energy' (total) or 'ae' (minus element offsets)",
            ("energy", "ae"),
        ),
        "reaction_key": Option(None, "record key to use as reaction label"),
    }

    def detect(self, path: Path) -> bool:
        """True for ``*.lmdb`` files or folders of them."""
        path = Path(path)
        return path.suffix == ".lmdb" or (path.is_dir() and any(path.glob("*.lmdb")))

    def files(self, path: Path) -> List[Path]:
        return lmdb_files(path)

    def count(self, path: Path) -> Optional[int]:
        env = _open(path)
        try:
            return _length(env)
        finally:
            env.close()

    def prepare(self, files: Sequence[Path], options: Dict[str, Any]) -> Dict[str, Any]:
        return {"metadata": {"energy_key": options["energy_key"]}}

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        env = _open(path)
        try:
            n_records = _length(env)
            with env.begin() as txn:
                for i in range(n_records):

                    def load(i: int = i, txn=txn) -> HessianRecord:
                        raw = txn.get(str(i).encode("ascii"))
                        if raw is None:
                            raise ConversionError(f"record {i} missing")
                        return _to_record(
                            load_record(raw),
                            options["energy_key"],
                            options["reaction_key"],
                        )

                    yield None, load
        finally:
            env.close()


READER = HormReader()
