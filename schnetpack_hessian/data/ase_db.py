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

import schnetpack.properties as structure
from schnetpack.data import ASEAtomsData

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.dbfile import read_db_labels
from schnetpack_hessian.data.storage import (
    check_loaded,
    check_stored,
    follow_hessian_unit,
    loaded_array,
    native_byte_order,
    to_tensor,
)
from schnetpack_hessian.data.units import check_units
from schnetpack_hessian.data.validation import HessianDataError

__all__ = ["HessianASEAtomsData"]


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
        numbers = row["numbers"]
        n = len(numbers)
        data = native_byte_order(row.data, self.datapath, idx)
        arrays = {
            name: loaded_array(
                check_stored(name, np.asarray(data[name]), n, self.datapath, idx),
                self.conversions[name],
            )
            for name in load_properties
        }
        positions = (
            loaded_array(row["positions"], self.distance_conversion)
            if load_structure
            else None
        )
        check_loaded(
            n,
            positions,
            arrays.get("energy"),
            arrays.get(P.hessian),
            self.units,
            self.distance_unit,
            self.datapath,
            idx,
        )
        props: Dict[str, Any] = {structure.idx: torch.tensor([idx])}
        props.update({name: torch.from_numpy(arrays[name]) for name in load_properties})
        props[structure.n_atoms] = torch.tensor([n])
        if load_structure:
            props[structure.Z] = torch.tensor(numbers, dtype=torch.long)
            props[structure.position] = torch.from_numpy(positions)
            props[structure.cell] = to_tensor(
                row["cell"][None], self.distance_conversion
            )
            props[structure.pbc] = torch.tensor(row["pbc"])
        if load_metadata:
            props["metadata"] = row.key_value_pairs
        return props

    def labels(self, name: str) -> np.ndarray:
        """All values of a per-structure label (``kind`` or ``reaction``) of this
        (subset) dataset as int64 ``(len(self),)``.

        Raises:
            HessianDataError: the file has no such label.
        """
        if name not in self.available_properties:
            raise HessianDataError(f"{self.datapath}: the file has no {name!r} labels")
        values = read_db_labels(self.conn, name)
        if self.subset_idx is not None:
            values = values[np.asarray(self.subset_idx, dtype=np.int64)]
        return values
