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
``torch_geometric`` classes to minimal stand-ins and resolves nothing but the exact
``(module, name)`` pairs such a record needs: a crafted record cannot run code.
"""

import codecs
import io
import pickle
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from schnetpack_hessian.layout import as_square
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
#: PyG classes a HORM record names (PyG 1.x and 2.x); each becomes :class:`_PygObject`.
_PYG_CLASSES = frozenset(
    {
        ("torch_geometric.data.data", "Data"),
        ("torch_geometric.data.data", "DataEdgeAttr"),
        ("torch_geometric.data.data", "DataTensorAttr"),
        ("torch_geometric.data.storage", "BaseStorage"),
        ("torch_geometric.data.storage", "GlobalStorage"),
        ("torch_geometric.data.storage", "NodeStorage"),
        ("torch_geometric.data.storage", "EdgeStorage"),
    }
)


class _PygObject:
    """Stand-in for PyG's ``Data`` and its storages: keeps the pickled state."""

    def __setstate__(self, state: Any):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"a PyG object's state is a {type(state).__name__}, not a dict"
            )
        self.__dict__.update(state)


def _numeric_dtype(*args) -> np.dtype:
    """``numpy.dtype`` for numeric and boolean types only (an object dtype would let
    an array's payload name arbitrary Python objects)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refusing the object dtype {dtype}")
    return dtype


def _safe_globals() -> Dict[Tuple[str, str], Any]:
    """The exact ``(module, name)`` pairs a HORM record needs, and what each becomes.

    Tensors pickle as ``torch._utils._rebuild_tensor_v2(storage, ...)`` with the
    storage as a ``torch.save`` payload (loaded here weights-only); arrays through
    numpy's reconstructors (numpy 1.x and 2.x module names; ``_frombuffer`` at
    protocol 5); Python 3 bytes at
    protocol 2 through ``_codecs.encode``.  Every callable is a fresh wrapper, so a
    record that sets attributes on what it resolved (pickle's BUILD) changes nothing
    outside its own load.
    """
    import collections

    import torch
    import torch._utils

    def rebuild_tensor_v2(*args):
        return torch._utils._rebuild_tensor_v2(*args)

    def rebuild_tensor(*args):
        return torch._utils._rebuild_tensor(*args)

    def load_storage(payload: bytes):
        if not isinstance(payload, bytes):
            raise pickle.UnpicklingError("a tensor storage payload is not bytes")
        return torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")

    def reconstruct(subtype, shape, dtype):
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError(f"refusing to rebuild an array of {subtype}")
        return np.ndarray.__new__(np.ndarray, shape, _numeric_dtype(dtype))

    def scalar(dtype, *payload):
        dtype = _numeric_dtype(dtype)
        if len(payload) != 1 or not isinstance(payload[0], bytes):
            raise pickle.UnpicklingError("a numpy scalar's payload is not bytes")
        return np.frombuffer(payload[0], dtype=dtype, count=1)[0]

    def frombuffer(buffer, dtype, shape, order):
        if not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
            raise pickle.UnpicklingError("a numpy array's payload is not bytes")
        array = np.frombuffer(buffer, dtype=_numeric_dtype(dtype))
        return array.reshape(shape, order=order)

    def size(*args):
        return torch.Size(*args)

    def ordered_dict(*args):
        return collections.OrderedDict(*args)

    def encode(text, encoding="latin1"):
        if not isinstance(text, str) or encoding != "latin1":
            raise pickle.UnpicklingError("only latin-1 text becomes bytes")
        return codecs.encode(text, encoding)

    class PygObject(_PygObject):
        pass

    table: Dict[Tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): load_storage,
        ("torch", "Size"): size,
        ("collections", "OrderedDict"): ordered_dict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _numeric_dtype,
        ("_codecs", "encode"): encode,
    }
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(core, "_reconstruct")] = reconstruct
        table[(core, "scalar")] = scalar
    for numeric in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(numeric, "_frombuffer")] = frombuffer
    table.update({pair: PygObject for pair in _PYG_CLASSES})
    return table


class HormUnpickler(pickle.Unpickler):
    """Unpickler for PyG records without ``torch_geometric`` installed.

    Only the exact ``(module, name)`` pairs of :func:`_safe_globals` resolve; any other
    global (``os.system``, ``builtins.eval``, a dotted name reaching through a module's
    attributes such as ``torch`` / ``os.system``) is refused before it can be called.
    """

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._globals = _safe_globals()

    def find_class(self, module: str, name: str):
        found = self._globals.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: a HORM record holds only PyG "
                "Data, torch tensors and numpy arrays"
            )
        return found


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
        hessian = as_square(np.ravel(hessian), n)
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
