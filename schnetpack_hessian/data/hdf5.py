"""HDF5 backend: SchNetPack's dataset on a ``.h5`` training file, read lazily per process.

The file layout, its writer and the numpy reads live in :mod:`~.h5file` (without
torch); this module turns what they read into SchNetPack's property tensors.
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
from schnetpack_hessian.data.h5file import (
    H5Appender,
    H5Index,
    open_h5,
    property_handles,
    read_header,
    read_labels,
    read_stored,
)
from schnetpack_hessian.data.storage import (
    check_loaded,
    check_stored,
    follow_hessian_unit,
    loaded_array,
)
from schnetpack_hessian.data.units import check_units, conversion_factor
from schnetpack_hessian.data.validation import HessianDataError

__all__ = ["HDF5AtomsData"]

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
        self._metadata, self._index = read_header(self.datapath)
        md = self._metadata
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
        if self.subset_idx and max(self.subset_idx) >= len(self._index):
            raise HessianDataError(
                f"{self.datapath}: subset index {max(self.subset_idx)} out of range "
                f"for {len(self._index)} structures"
            )

    # -- file handling -------------------------------------------------------------
    @property
    def file(self) -> h5py.File:
        """The open file of this process (opened on first use, reopened after fork)."""
        if self._file is None or self._pid != os.getpid():
            self._file = open_h5(self.datapath)
            self._pid = os.getpid()
            self._datasets = property_handles(self._file)
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
        return len(self._index)

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
        stored = read_stored(
            self._handles(),
            self._index,
            idx,
            load_properties,
            load_structure,
            self.datapath,
        )
        idx, n = int(idx), int(self._index.n_atoms[idx])
        arrays = {
            name: loaded_array(stored[name], self.conversions[name])
            for name in load_properties
        }
        if load_structure:
            arrays[structure.Z] = loaded_array(stored["numbers"])
            arrays[structure.position] = loaded_array(
                stored["positions"], self.distance_conversion
            )
            arrays[structure.cell] = loaded_array(
                stored["cell"][None], self.distance_conversion
            )
        check_loaded(
            n,
            arrays.get(structure.position),
            arrays.get("energy"),
            arrays.get(P.hessian),
            self._units,
            self.distance_unit,
            self.datapath,
            idx,
        )
        props: Dict[str, torch.Tensor] = {structure.idx: torch.tensor([idx])}
        props.update({name: torch.from_numpy(arrays[name]) for name in load_properties})
        props[structure.n_atoms] = torch.tensor([n])
        if load_structure:
            for key in (structure.Z, structure.position, structure.cell):
                props[key] = torch.from_numpy(arrays[key])
            props[structure.pbc] = torch.from_numpy(stored["pbc"].astype(bool))
        return props

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
        values = read_labels(self.file, name, self.datapath)
        if self.subset_idx is not None:
            values = values[np.asarray(self.subset_idx, dtype=np.int64)]
        return values

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
            else range(len(self._index))
        )
        out = []
        for i in idx:
            blocks = check_stored(
                P.hessian,
                self._index.rows(ds, "atom_pair", i),
                int(self._index.n_atoms[i]),
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
            self._index = H5Index(f["n_atoms"][:])
