"""Hessian-aware data: training files (``.db`` / ``.h5``), validation, data module.

Public entry points:

- :func:`iread` / :func:`write`: any training file ↔ ``ase.Atoms`` in ASE units.
- :class:`HDF5AtomsData`, :class:`HessianASEAtomsData`, :func:`open_dataset`.
- :class:`HessianDataModule` and the split strategies.
- :class:`HessianDataError` and the validation helpers; :class:`PhysicsCheck` (sum
  rules and force-constant magnitudes against the stored forces).
"""

from schnetpack_hessian.data.validation import (
    SYMMETRY_RTOL,
    HessianDataError,
    SymmetryReport,
    check_hessian,
    hessian_asymmetry,
    symmetrize,
)
from schnetpack_hessian.data.units import (
    ASE_UNITS,
    conversion_factor,
    derived_units,
    normalize_unit,
)
from schnetpack_hessian.data.record import (
    HessianRecord,
    Origin,
    ReactionIds,
    reaction_names,
    convert_record,
    kind_code,
    kind_name,
    record_from_atoms,
    record_to_atoms,
    validate_record,
)
from schnetpack_hessian.data.physics import PHYSICS_RTOL, PhysicsCheck, PhysicsReport
from schnetpack_hessian.data.hdf5 import HDF5AtomsData
from schnetpack_hessian.data.ase_db import HessianASEAtomsData
from schnetpack_hessian.data.splitting import (
    CriticalPointSplit,
    RandomStructureSplit,
    ReactionSplit,
)
from schnetpack_hessian.data.datamodule import HessianDataModule
from schnetpack_hessian.data.io import (
    RecordWriter,
    atomic_output,
    backend_of,
    check_file,
    file_metadata,
    file_reactions,
    file_units,
    iread,
    open_dataset,
    read_records,
    write,
    write_records,
)

__all__ = [
    "CriticalPointSplit",
    "HessianDataModule",
    "RandomStructureSplit",
    "ReactionSplit",
    "ASE_UNITS",
    "SYMMETRY_RTOL",
    "HDF5AtomsData",
    "HessianASEAtomsData",
    "HessianDataError",
    "HessianRecord",
    "Origin",
    "PHYSICS_RTOL",
    "PhysicsCheck",
    "PhysicsReport",
    "ReactionIds",
    "reaction_names",
    "RecordWriter",
    "SymmetryReport",
    "atomic_output",
    "backend_of",
    "check_file",
    "check_hessian",
    "conversion_factor",
    "convert_record",
    "derived_units",
    "file_metadata",
    "file_reactions",
    "file_units",
    "hessian_asymmetry",
    "iread",
    "kind_code",
    "kind_name",
    "normalize_unit",
    "open_dataset",
    "read_records",
    "record_from_atoms",
    "record_to_atoms",
    "symmetrize",
    "validate_record",
    "write",
    "write_records",
]
