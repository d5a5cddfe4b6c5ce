"""ASE-db backend: SchNetPack's own ``.db`` format, readable by plain SchNetPack.

Each row stores the structure, the properties in ``row.data`` (``energy`` ``(1,)``,
``forces`` ``(N, 3)``, ``hessian`` ``(N², 3, 3)``, ``kind`` and ``reaction`` ``(1,)``)
and, for ``ase db`` queries, ``kind`` (label string) and ``reaction`` as key-value
pairs.  The file metadata carries SchNetPack's ``_property_unit_dict``,
``_distance_unit`` and ``atomrefs``.
"""

from typing import Any, Dict, List

import numpy as np
import torch
from ase import Atoms
from ase.db.core import Database

import schnetpack.properties as structure
from schnetpack.data import ASEAtomsData

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.record import kind_name
from schnetpack_hessian.data.storage import (
    check_loaded,
    check_stored,
    follow_hessian_unit,
    native_byte_order,
    to_tensor,
)
from schnetpack_hessian.data.units import check_units
from schnetpack_hessian.data.validation import HessianDataError

__all__ = ["HessianASEAtomsData", "DBAppender"]


class HessianASEAtomsData(ASEAtomsData):
    """:class:`schnetpack.data.ASEAtomsData` that keeps integer labels as int64,
    accepts unit strings such as ``"kcal/mol/Ang^2"`` and lists labels quickly.

    Arguments as :class:`~schnetpack.data.ASEAtomsData`.
    """

    def __init__(
        self, datapath: str, *args, property_units=None, distance_unit=None, **kwargs
    ):
        property_units, distance_unit = check_units(
            property_units, distance_unit, str(datapath)
        )
        super().__init__(
            str(datapath),
            *args,
            property_units=property_units,
            distance_unit=distance_unit,
            **kwargs,
        )
        follow_hessian_unit(self.units, self.conversions, property_units)

    def _get_properties(
        self,
        conn,
        idx: int,
        load_properties: List[str],
        load_structure: bool,
        load_metadata: bool = False,
    ):
        row = conn.get(idx + 1)
        props: Dict[str, Any] = {structure.idx: torch.tensor([idx])}
        numbers = row["numbers"]
        data = native_byte_order(row.data, self.datapath, idx)
        for name in load_properties:
            value = check_stored(
                name, np.asarray(data[name]), len(numbers), self.datapath, idx
            )
            props[name] = to_tensor(value, self.conversions[name])
        props[structure.n_atoms] = torch.tensor([numbers.shape[0]])
        if load_structure:
            props[structure.Z] = torch.tensor(numbers, dtype=torch.long)
            props[structure.position] = to_tensor(
                row["positions"], self.distance_conversion
            )
            props[structure.cell] = to_tensor(
                row["cell"][None], self.distance_conversion
            )
            props[structure.pbc] = torch.tensor(row["pbc"])
        if load_metadata:
            props["metadata"] = row.key_value_pairs
        check_loaded(props, self.units, self.distance_unit, self.datapath, idx)
        return props

    def labels(self, name: str) -> np.ndarray:
        """All values of a per-structure label (``kind`` or ``reaction``) of this
        (subset) dataset as int64 ``(len(self),)``.

        Raises:
            HessianDataError: the file has no such label.
        """
        if name not in self.available_properties:
            raise HessianDataError(f"{self.datapath}: the file has no {name!r} labels")
        values = np.empty(self.conn.count(), dtype=np.int64)
        for row in self.conn.select(include_data=False):
            kvp = row.key_value_pairs
            if name not in kvp:
                values[row.id - 1] = int(
                    np.asarray(self.conn.get(row.id).data[name])[0]
                )
            elif name == P.kind:
                values[row.id - 1] = P.KINDS.index(kvp[name])
            else:
                values[row.id - 1] = int(kvp[name])
        if self.subset_idx is not None:
            values = values[np.asarray(self.subset_idx, dtype=np.int64)]
        return values


class DBAppender:
    """Appends storage dicts to an ASE database in transactions of ``buffer_size``."""

    def __init__(self, conn: Database, buffer_size: int = 512):
        self.conn = conn
        self.buffer_size = buffer_size
        self._buffer: List[Dict[str, np.ndarray]] = []
        with conn:
            self.properties = list(conn.metadata["_property_unit_dict"])

    def add(self, data: Dict[str, np.ndarray]):
        """Queue one structure (storage arrays, see :mod:`~.storage`)."""
        self._buffer.append(data)
        if len(self._buffer) >= self.buffer_size:
            self.flush()

    def flush(self):
        """Write the buffered structures in one transaction."""
        buf, self._buffer = self._buffer, []
        with self.conn:
            for d in buf:
                atoms = Atoms(
                    numbers=d["numbers"],
                    positions=d["positions"],
                    cell=d["cell"],
                    pbc=d["pbc"],
                )
                kvp = {}
                if P.kind in d:
                    kvp[P.kind] = kind_name(np.asarray(d[P.kind])[0])
                if P.reaction in d:
                    kvp[P.reaction] = int(np.asarray(d[P.reaction])[0])
                self.conn.write(
                    atoms,
                    key_value_pairs=kvp,
                    data={p: np.asarray(d[p]) for p in self.properties},
                )
