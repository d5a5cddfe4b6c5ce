"""HDF5 backend: one ``.h5`` file, chunked and compressed, read lazily per process.

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
from typing import Any, Dict, Iterable, List, Optional, Union

import h5py
import numpy as np
import torch
from ase import Atoms

import schnetpack.properties as structure
from schnetpack.data import BaseAtomsData

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.storage import (
    check_loaded,
    check_stored,
    follow_hessian_unit,
    to_tensor,
)
from schnetpack_hessian.data.units import check_units, conversion_factor
from schnetpack_hessian.data.validation import HessianDataError
from schnetpack_hessian.files import require_space

__all__ = ["HDF5AtomsData", "H5Appender", "FORMAT_NAME", "FORMAT_VERSION"]

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


def _open(path: str) -> h5py.File:
    """Open a training file for reading; a damaged file is a HessianDataError."""
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise HessianDataError(
            f"{path}: cannot open the HDF5 file, it is truncated, corrupt or not "
            f"HDF5 ({err})"
        ) from err


def _check_layout(f: h5py.File, path: str):
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


class HDF5AtomsData(BaseAtomsData):
    """SchNetPack dataset on an HDF5 file of this package's schema.

    The file is opened lazily on first access in each process (and reopened after a
    fork), so it works with ``DataLoader(num_workers > 0)`` and DDP.  Properties are
    returned as SchNetPack's :class:`~schnetpack.data.ASEAtomsData` returns them:
    floats as float64 in the requested units, labels as int64.

    Args:
        datapath: path of the ``.h5`` file.
        load_properties: properties to load (default: all).
        load_structure: load ``_atomic_numbers``, ``_positions``, ``_cell``, ``_pbc``.
        transforms: SchNetPack transforms applied to every structure.
        subset_idx: indices of the structures this dataset exposes.
        property_units: property → unit to convert to on loading,
            e.g. ``{"hessian": "kcal/mol/Ang/Ang"}``.
        distance_unit: unit to convert positions and cell to.
    """

    def __init__(
        self,
        datapath: str,
        load_properties: Optional[List[str]] = None,
        load_structure: bool = True,
        transforms: Optional[List[torch.nn.Module]] = None,
        subset_idx: Optional[List[int]] = None,
        property_units: Optional[Dict[str, str]] = None,
        distance_unit: Optional[str] = None,
    ):
        self.datapath = str(datapath)
        self._file: Optional[h5py.File] = None
        self._pid: Optional[int] = None
        self._datasets: Dict[str, Any] = {}
        if not os.path.exists(self.datapath):
            raise HessianDataError(f"{self.datapath}: HDF5 file does not exist")
        with _open(self.datapath) as f:
            if f.attrs.get("format") != FORMAT_NAME:
                raise HessianDataError(
                    f"{self.datapath}: not a {FORMAT_NAME} HDF5 file (attribute "
                    f"format={f.attrs.get('format')!r}); convert it with spkhess-convert"
                )
            _check_layout(f, self.datapath)
            self._metadata = json.loads(f.attrs["metadata"])
            self._n_atoms = np.asarray(f["n_atoms"][:], dtype=np.int64)
        self._atom_off = np.concatenate([[0], np.cumsum(self._n_atoms)])
        self._pair_off = np.concatenate([[0], np.cumsum(self._n_atoms**2)])
        md = self._metadata
        for key in ("_distance_unit", "_property_unit_dict"):
            if key not in md:
                raise HessianDataError(f"{self.datapath}: metadata lacks {key}")
        self._units = dict(md["_property_unit_dict"])
        self.conversions = {p: 1.0 for p in self._units}
        property_units, distance_unit = check_units(
            property_units, distance_unit, str(self.datapath)
        )
        for prop, unit in property_units.items():
            if prop not in self._units:
                raise HessianDataError(
                    f"{self.datapath}: property_units names {prop!r}, which the file "
                    f"does not store (available: {list(self._units)})"
                )
            self.conversions[prop] = conversion_factor(self._units[prop], unit)
            self._units[prop] = unit
        follow_hessian_unit(self._units, self.conversions, property_units)
        self.distance_unit = distance_unit or md["_distance_unit"]
        self.distance_conversion = conversion_factor(
            md["_distance_unit"], self.distance_unit
        )
        BaseAtomsData.__init__(
            self,
            load_properties=load_properties,
            load_structure=load_structure,
            transforms=transforms,
            subset_idx=subset_idx,
        )
        if self.subset_idx and max(self.subset_idx) >= len(self._n_atoms):
            raise HessianDataError(
                f"{self.datapath}: subset index {max(self.subset_idx)} out of range "
                f"for {len(self._n_atoms)} structures"
            )

    # -- file handling -------------------------------------------------------------
    @property
    def file(self) -> h5py.File:
        """The open file of this process (opened on first use, reopened after fork)."""
        if self._file is None or self._pid != os.getpid():
            self._file = _open(self.datapath)
            self._pid = os.getpid()
            self._datasets = {
                name: (ds, ds.attrs["per"])
                for name, ds in self._file["properties"].items()
            }
            self._datasets.update(
                {
                    k: (self._file[k], None)
                    for k in ("numbers", "positions", "cell", "pbc")
                }
            )
        return self._file

    def _handles(self) -> Dict[str, Any]:
        """``name → (h5py dataset, per)`` of this process's open file."""
        if self.file is None:
            raise HessianDataError(f"{self.datapath}: cannot open")
        return self._datasets

    def close(self):
        """Close this process's file handle."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._datasets = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        state["_datasets"] = {}
        return state

    # -- dataset protocol ----------------------------------------------------------
    def __len__(self) -> int:
        if self.subset_idx is not None:
            return len(self.subset_idx)
        return len(self._n_atoms)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        if self.subset_idx is not None:
            idx = self.subset_idx[idx]
        props = self._get_properties(idx, self.load_properties, self.load_structure)
        if self._transform_module is not None:
            props = self._transform_module(props)
        return props

    def _get_properties(
        self, idx: int, load_properties: List[str], load_structure: bool
    ) -> Dict[str, torch.Tensor]:
        ds = self._handles()
        idx = int(idx)
        if not 0 <= idx < len(self._n_atoms):
            raise IndexError(f"{self.datapath}: index {idx} out of range")
        n = int(self._n_atoms[idx])
        a0, a1 = self._atom_off[idx], self._atom_off[idx + 1]
        props: Dict[str, torch.Tensor] = {structure.idx: torch.tensor([idx])}
        for name in load_properties:
            value = check_stored(
                name, self._read(*ds[name], idx), n, self.datapath, idx
            )
            props[name] = to_tensor(value, self.conversions[name])
        props[structure.n_atoms] = torch.tensor([n])
        if load_structure:
            props[structure.Z] = torch.from_numpy(
                ds["numbers"][0][a0:a1].astype(np.int64)
            )
            props[structure.position] = to_tensor(
                ds["positions"][0][a0:a1], self.distance_conversion
            )
            props[structure.cell] = to_tensor(
                ds["cell"][0][idx][None], self.distance_conversion
            )
            props[structure.pbc] = torch.from_numpy(ds["pbc"][0][idx].astype(bool))
        check_loaded(props, self._units, self.distance_unit, self.datapath, idx)
        return props

    def _read(self, ds: h5py.Dataset, per: str, idx: int) -> np.ndarray:
        if per == "structure":
            return ds[idx]
        off = self._atom_off if per == "atom" else self._pair_off
        return ds[off[idx] : off[idx + 1]]

    def iter_properties(
        self,
        indices: Union[int, Iterable[int], None] = None,
        load_properties: Optional[List[str]] = None,
        load_structure: Optional[bool] = None,
    ):
        """Yield property dicts of the given (subset) indices, as ``ASEAtomsData``."""
        load_properties = load_properties or self.load_properties
        load_structure = load_structure or self.load_structure
        if indices is None:
            indices = range(len(self))
        elif isinstance(indices, int):
            indices = [indices]
        for i in indices:
            j = self.subset_idx[i] if self.subset_idx is not None else i
            yield self._get_properties(j, load_properties, load_structure)

    def labels(self, name: str) -> np.ndarray:
        """All values of a per-structure label (``kind`` or ``reaction``) of this
        (subset) dataset as int64 ``(len(self),)``.

        Raises:
            HessianDataError: the file has no such label.
        """
        if name not in self.file["properties"]:
            raise HessianDataError(f"{self.datapath}: the file has no {name!r} labels")
        values = np.asarray(self.file["properties"][name][:]).reshape(-1)
        if self.subset_idx is not None:
            values = values[np.asarray(self.subset_idx, dtype=np.int64)]
        return values.astype(np.int64)

    def has_hessian(self) -> np.ndarray:
        """Boolean mask ``(len(self),)``: structures with a Hessian (checked on each
        structure's whole block set).

        Raises:
            HessianDataError: a partly NaN Hessian (file and index named).
        """
        ds = self.file["properties"][P.hessian]
        idx = (
            self.subset_idx
            if self.subset_idx is not None
            else range(len(self._n_atoms))
        )
        out = []
        for i in idx:
            blocks = check_stored(
                P.hessian,
                self._read(ds, "atom_pair", i),
                int(self._n_atoms[i]),
                self.datapath,
                i,
            )
            out.append(not np.isnan(blocks).all())
        return np.array(out, dtype=bool)

    # -- metadata ------------------------------------------------------------------
    @property
    def available_properties(self) -> List[str]:
        return list(self._metadata["_property_unit_dict"].keys())

    @property
    def units(self) -> Dict[str, str]:
        return self._units

    @property
    def metadata(self) -> Dict[str, Any]:
        return dict(self._metadata)

    @property
    def atomrefs(self) -> Dict[str, torch.Tensor]:
        arefs = self._metadata.get("atomrefs", {})
        return {
            k: self.conversions.get(k, 1.0) * torch.tensor(v) for k, v in arefs.items()
        }

    def update_metadata(self, **kwargs):
        """Add entries to the file metadata (keys starting with ``_`` are protected)."""
        if any(k.startswith("_") for k in kwargs):
            raise HessianDataError("metadata keys starting with '_' are protected")
        self.close()
        md = dict(self._metadata)
        md.update(kwargs)
        with h5py.File(self.datapath, "a") as f:
            f.attrs["metadata"] = json.dumps(md)
        self._metadata = md

    # -- creation (SchNetPack's BaseAtomsData API; use ``data.write`` for files) ---
    @staticmethod
    def create(
        datapath: str,
        distance_unit: str,
        property_unit_dict: Dict[str, str],
        atomrefs: Optional[Dict[str, List[float]]] = None,
        **kwargs,
    ) -> "HDF5AtomsData":
        """Create an empty file with SchNetPack's metadata (not atomic; prefer
        :func:`schnetpack_hessian.data.write` and converters for whole files)."""
        if os.path.exists(datapath):
            raise HessianDataError(f"dataset already exists: {datapath}")
        md = {
            "_property_unit_dict": property_unit_dict,
            "_distance_unit": distance_unit,
            "atomrefs": atomrefs or {},
        }
        with h5py.File(datapath, "w") as f:
            H5Appender(f, md)
        return HDF5AtomsData(datapath, **kwargs)

    def add_system(self, atoms: Optional[Atoms] = None, **properties):
        """Append one structure (``atoms`` or ``_atomic_numbers``/``_positions``...)."""
        self.add_systems([properties], [atoms])

    def add_systems(
        self,
        property_list: List[Dict[str, Any]],
        atoms_list: Optional[List[Atoms]] = None,
        atoms_metadata_list: Optional[List[Dict[str, Any]]] = None,
    ):
        """Append structures; each property dict must hold every file property."""
        atoms_list = atoms_list or [None] * len(property_list)
        self.close()
        with h5py.File(self.datapath, "a") as f:
            app = H5Appender(f)
            for atoms, props in zip(atoms_list, property_list):
                data = {k: np.asarray(v) for k, v in props.items()}
                if atoms is not None:
                    data.update(
                        numbers=atoms.numbers,
                        positions=atoms.positions,
                        cell=atoms.cell[:],
                        pbc=atoms.pbc,
                    )
                else:
                    data.update(
                        numbers=data.pop(structure.Z),
                        positions=data.pop(structure.R),
                        cell=data.pop(structure.cell, np.zeros((3, 3))),
                        pbc=data.pop(structure.pbc, np.zeros(3, dtype=bool)),
                    )
                app.add(data)
            app.flush()
            self._n_atoms = np.asarray(f["n_atoms"][:], dtype=np.int64)
        self._atom_off = np.concatenate([[0], np.cumsum(self._n_atoms)])
        self._pair_off = np.concatenate([[0], np.cumsum(self._n_atoms**2)])
