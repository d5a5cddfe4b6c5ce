"""The ``.h5`` training-file layout: writing structures and reading their stored arrays.

Plain numpy and h5py, without torch, so that converters and the generator write and
read files without loading it; :class:`~.hdf5.HDF5AtomsData` is the SchNetPack dataset
on top of it.

Schema (version 1, see ``docs/DATA.md``)::

    /                     attrs: format="schnetpack-hessian", format_version=1,
                                 metadata=<JSON: _property_unit_dict, _distance_unit,
                                           atomrefs, kinds, hessian_layout, source, ...>
    /n_atoms              (M,)          int32    atoms per structure
    /numbers              (ΣN,)         uint8    atomic numbers, structures concatenated
    /positions            (ΣN, 3)       float64  [_distance_unit]
    /cell                 (M, 3, 3)     float64  [_distance_unit]
    /pbc                  (M, 3)        bool
    /properties/<name>    attrs: per = "structure" | "atom" | "atom_pair", unit
        per="structure":  (M, *shape)   e.g. energy (M, 1), kind (M, 1), reaction (M, 1)
        per="atom":       (ΣN, *shape)  e.g. forces (ΣN, 3)
        per="atom_pair":  (ΣN², *shape) e.g. hessian (ΣN², 3, 3), NaN when missing

Structure m owns rows ``off_m = Σ_{k<m} N_k`` (atoms) and ``Σ_{k<m} N_k²`` (pairs);
offsets are computed from ``/n_atoms`` when the file is opened.
"""

import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import h5py
import numpy as np

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.storage import check_loaded, check_stored, loaded_array
from schnetpack_hessian.data.validation import HessianDataError
from schnetpack_hessian.files import require_space

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "H5Appender",
    "H5Index",
    "open_h5",
    "check_layout",
    "read_header",
    "property_handles",
    "read_stored",
    "read_labels",
    "iter_storage",
]

FORMAT_NAME = "schnetpack-hessian"
FORMAT_VERSION = 1

#: Row layout of the known properties; others are inferred from their first shape.
PER = {
    "energy": "structure",
    "forces": "atom",
    P.hessian: "atom_pair",
    P.kind: "structure",
    P.reaction: "structure",
    P.hessian_label_probes: "atom",
    P.hessian_label_hvp: "atom",
}
_PER_VALUES = ("structure", "atom", "atom_pair")
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_CHUNK_BYTES = 1 << 14


def _rows(per: str, n_atoms: int) -> int:
    return {"structure": 1, "atom": n_atoms, "atom_pair": n_atoms * n_atoms}[per]


def _infer_per(name: str, value: np.ndarray, n_atoms: int) -> str:
    if name in PER:
        return PER[name]
    if value.ndim and value.shape[0] == n_atoms * n_atoms and n_atoms > 1:
        return "atom_pair"
    if value.ndim and value.shape[0] == n_atoms and n_atoms > 1:
        return "atom"
    return "structure"


def _new_dataset(group: h5py.Group, name: str, trailing: tuple, dtype) -> h5py.Dataset:
    row_bytes = int(np.prod(trailing, dtype=np.int64)) * np.dtype(dtype).itemsize
    chunk_rows = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    return group.create_dataset(
        name,
        shape=(0,) + trailing,
        maxshape=(None,) + trailing,
        dtype=dtype,
        chunks=(chunk_rows,) + trailing,
        **_COMPRESSION,
    )


class H5Appender:
    """Appends structures to an open, writable file (buffered, constant memory).

    Args:
        file: ``h5py.File`` opened for writing.
        metadata: file metadata (only used when the file is new).
        dtypes: storage dtype per property name (default float64 / int64).
        buffer_size: structures buffered before a write.
    """

    def __init__(
        self,
        file: h5py.File,
        metadata: Optional[Dict[str, Any]] = None,
        dtypes: Optional[Dict[str, Any]] = None,
        buffer_size: int = 512,
    ):
        self.file = file
        self.dtypes = dtypes or {}
        self.buffer_size = buffer_size
        self._buffer: List[Dict[str, np.ndarray]] = []
        if "n_atoms" not in file:
            file.attrs["format"] = FORMAT_NAME
            file.attrs["format_version"] = FORMAT_VERSION
            file.attrs["metadata"] = json.dumps(metadata or {})
            _new_dataset(file, "n_atoms", (), np.int32)
            _new_dataset(file, "numbers", (), np.uint8)
            _new_dataset(file, "positions", (3,), np.float64)
            _new_dataset(file, "cell", (3, 3), np.float64)
            _new_dataset(file, "pbc", (3,), bool)
            file.create_group("properties")
        self.units = json.loads(file.attrs["metadata"])["_property_unit_dict"]

    def add(self, data: Dict[str, np.ndarray]):
        """Queue one structure (storage arrays, see :mod:`~.storage`)."""
        missing = [p for p in self.units if p not in data]
        if missing:
            raise HessianDataError(
                f"{self.file.filename}: structure {self.n_structures + len(self._buffer)}"
                f" lacks the properties {missing}"
            )
        self._buffer.append(data)
        if len(self._buffer) >= self.buffer_size:
            self.flush()

    @property
    def n_structures(self) -> int:
        """Structures written so far (excluding the buffer)."""
        return int(self.file["n_atoms"].shape[0])

    def flush(self):
        """Write the buffered structures."""
        if not self._buffer:
            return
        buf, self._buffer = self._buffer, []
        # HDF5 crashes when it meets a full disk: refuse the write beforehand
        require_space(
            self.file.filename,
            sum(np.asarray(a).nbytes for d in buf for a in d.values()),
        )
        n_atoms = np.array([len(d["numbers"]) for d in buf], dtype=np.int32)
        self._extend(self.file["n_atoms"], n_atoms)
        for key in ("numbers", "positions"):
            self._extend(self.file[key], np.concatenate([d[key] for d in buf]))
        self._extend(
            self.file["cell"], np.stack([np.reshape(d["cell"], (3, 3)) for d in buf])
        )
        self._extend(self.file["pbc"], np.stack([np.reshape(d["pbc"], 3) for d in buf]))
        props = self.file["properties"]
        for name, unit in self.units.items():
            first = np.asarray(buf[0][name])
            if name not in props:
                per = _infer_per(name, first, int(n_atoms[0]))
                trailing = first.shape[1:] if per != "structure" else first.shape
                dtype = self.dtypes.get(name, first.dtype)
                ds = _new_dataset(props, name, trailing, dtype)
                ds.attrs["per"] = per
                ds.attrs["unit"] = "" if unit is None else unit
            ds = props[name]
            per = ds.attrs["per"]
            if per == "structure":
                values = np.stack([np.asarray(d[name]) for d in buf])
            else:
                values = np.concatenate([np.asarray(d[name]) for d in buf])
            self._extend(ds, values.astype(ds.dtype, copy=False))

    @staticmethod
    def _extend(ds: h5py.Dataset, values: np.ndarray):
        start = ds.shape[0]
        ds.resize(start + values.shape[0], axis=0)
        ds[start:] = values


def open_h5(path: str) -> h5py.File:
    """Open a training file for reading; a damaged file is a HessianDataError."""
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise HessianDataError(
            f"{path}: cannot open the HDF5 file, it is truncated, corrupt or not "
            f"HDF5 ({err})"
        ) from err


def check_layout(f: h5py.File, path: str):
    """Every schema dataset exists and every property declares its row layout.

    Raises:
        HessianDataError: a missing dataset or a property without a valid ``per``.
    """
    required = ("n_atoms", "numbers", "positions", "cell", "pbc", "properties")
    missing = [k for k in required if k not in f]
    if missing:
        raise HessianDataError(
            f"{path}: lacks {', '.join(missing)} of the {FORMAT_NAME} schema "
            "(docs/DATA.md)"
        )
    for name, ds in f["properties"].items():
        per = ds.attrs.get("per")
        if per not in _PER_VALUES:
            raise HessianDataError(
                f"{path}: property {name!r} has per={per!r}; every dataset in "
                f"/properties declares its rows with an attribute per = "
                f"{' | '.join(_PER_VALUES)} (e.g. ds.attrs['per'] = 'structure')"
            )


class H5Index:
    """Where each structure's rows lie: atoms per structure and the row offsets of
    per-atom (``Σ_{k<m} N_k``) and per-atom-pair (``Σ_{k<m} N_k²``) datasets.

    Args:
        n_atoms: ``(M,)`` atoms per structure (the file's ``/n_atoms``).
    """

    def __init__(self, n_atoms: np.ndarray):
        self.n_atoms = np.asarray(n_atoms, dtype=np.int64)
        self.atom_offsets = np.concatenate([[0], np.cumsum(self.n_atoms)])
        self.pair_offsets = np.concatenate([[0], np.cumsum(self.n_atoms**2)])

    def __len__(self) -> int:
        return len(self.n_atoms)

    def rows(self, ds: h5py.Dataset, per: str, idx: int) -> np.ndarray:
        """The rows of structure ``idx`` in a dataset laid out ``per`` structure,
        atom or atom pair."""
        if per == "structure":
            return ds[idx]
        off = self.atom_offsets if per == "atom" else self.pair_offsets
        return ds[off[idx] : off[idx + 1]]


def read_header(path: str) -> Tuple[Dict[str, Any], H5Index]:
    """The metadata and structure index of a training file, with its schema checked.

    Raises:
        HessianDataError: the file is missing, damaged, of another format, lacks a
            schema dataset or the metadata's ``_distance_unit`` /
            ``_property_unit_dict``.
    """
    if not os.path.exists(path):
        raise HessianDataError(f"{path}: HDF5 file does not exist")
    with open_h5(path) as f:
        if f.attrs.get("format") != FORMAT_NAME:
            raise HessianDataError(
                f"{path}: not a {FORMAT_NAME} HDF5 file (attribute "
                f"format={f.attrs.get('format')!r}); convert it with spkhess-convert"
            )
        check_layout(f, path)
        metadata = json.loads(f.attrs["metadata"])
        index = H5Index(f["n_atoms"][:])
    for key in ("_distance_unit", "_property_unit_dict"):
        if key not in metadata:
            raise HessianDataError(f"{path}: metadata lacks {key}")
    return metadata, index


def property_handles(f: h5py.File) -> Dict[str, Tuple[h5py.Dataset, Optional[str]]]:
    """``name → (dataset, per)`` of an open file's properties and of its structure
    datasets (``numbers``, ``positions``, ``cell``, ``pbc``; ``per`` None)."""
    handles = {name: (ds, ds.attrs["per"]) for name, ds in f["properties"].items()}
    handles.update({k: (f[k], None) for k in ("numbers", "positions", "cell", "pbc")})
    return handles


def read_stored(
    handles: Dict[str, Tuple[h5py.Dataset, Optional[str]]],
    index: H5Index,
    idx: int,
    names: List[str],
    load_structure: bool,
    source: str,
) -> Dict[str, np.ndarray]:
    """The stored arrays of structure ``idx``, in the file's units and dtypes.

    Args:
        handles: :func:`property_handles` of the open file.
        index: the file's :class:`H5Index`.
        idx: structure index.
        names: properties to read (energy, forces and Hessian checked by
            :func:`~.storage.check_stored`).
        load_structure: also read ``numbers`` ``(N,)``, ``positions`` ``(N, 3)``,
            ``cell`` ``(3, 3)`` and ``pbc`` ``(3,)``.
        source: the file, for messages.

    Raises:
        IndexError: ``idx`` out of range.
        HessianDataError: a property of the wrong shape, infinite or partly NaN.
    """
    idx = int(idx)
    if not 0 <= idx < len(index):
        raise IndexError(f"{source}: index {idx} out of range")
    n = int(index.n_atoms[idx])
    stored = {
        name: check_stored(name, index.rows(*handles[name], idx), n, source, idx)
        for name in names
    }
    if load_structure:
        a0, a1 = index.atom_offsets[idx], index.atom_offsets[idx + 1]
        stored["numbers"] = handles["numbers"][0][a0:a1]
        stored["positions"] = handles["positions"][0][a0:a1]
        stored["cell"] = handles["cell"][0][idx]
        stored["pbc"] = handles["pbc"][0][idx]
    return stored


def read_labels(f: h5py.File, name: str, source: str) -> np.ndarray:
    """A per-structure label (``kind`` or ``reaction``) of every structure of an
    open file as int64 ``(M,)``.

    Raises:
        HessianDataError: the file has no such label.
    """
    if name not in f["properties"]:
        raise HessianDataError(f"{source}: the file has no {name!r} labels")
    return np.asarray(f["properties"][name][:]).reshape(-1).astype(np.int64)


def iter_storage(path: str) -> Iterator[Dict[str, np.ndarray]]:
    """Stream a training file's structures as storage dicts (every stored property,
    floats as float64, labels as int64, ``numbers``, ``positions``, ``cell``,
    ``pbc``) in the file's units, each checked as a dataset checks it on loading.

    Args:
        path: the ``.h5`` file.

    Raises:
        HessianDataError: the file or a structure is malformed (see
            :func:`read_header`, :func:`read_stored`, :func:`~.storage.check_loaded`).
    """
    metadata, index = read_header(path)
    units = metadata["_property_unit_dict"]
    with open_h5(path) as f:
        handles = property_handles(f)
        names = list(units)
        absent = [name for name in names if name not in f["properties"]]
        if absent and len(index):  # an empty file has no property datasets yet
            raise HessianDataError(
                f"{path}: the metadata declares the properties {absent}, which "
                "/properties lacks"
            )
        for i in range(len(index)):
            stored = read_stored(handles, index, i, names, True, path)
            data = {name: loaded_array(stored[name]) for name in names}
            data["positions"] = loaded_array(stored["positions"])
            check_loaded(
                int(index.n_atoms[i]),
                data["positions"],
                data.get("energy"),
                data.get(P.hessian),
                units,
                metadata["_distance_unit"],
                path,
                i,
            )
            data["numbers"] = np.asarray(stored["numbers"], dtype=np.int64)
            data["cell"] = loaded_array(stored["cell"])
            data["pbc"] = np.asarray(stored["pbc"], dtype=bool)
            yield data
