"""Hessian-aware data: training files (``.db`` / ``.h5``), validation, data module.

Public entry points:

- :func:`iread` / :func:`write`: any training file ↔ ``ase.Atoms`` in ASE units.
- :class:`HDF5AtomsData`, :class:`HessianASEAtomsData`, :func:`open_dataset`.
- :class:`HessianDataModule` and the split strategies.
- :class:`HessianDataError` and the validation helpers; :class:`PhysicsCheck` (sum
  rules and force-constant magnitudes against the stored forces).

Names are imported on first use (PEP 562, as in :mod:`schnetpack_hessian`): the
record, its units and checks need no torch, so the generator can use them before
tblite loads, while the datasets and the data module import torch when asked for.
"""

from importlib import import_module
from typing import Any, List

#: public name → module of this package that defines it
_LAZY = {
    **dict.fromkeys(
        (
            "SYMMETRY_RTOL",
            "HessianDataError",
            "SymmetryReport",
            "check_hessian",
            "hessian_asymmetry",
            "symmetrize",
        ),
        "validation",
    ),
    **dict.fromkeys(
        ("ASE_UNITS", "conversion_factor", "derived_units", "normalize_unit"), "units"
    ),
    **dict.fromkeys(
        (
            "HessianRecord",
            "Origin",
            "ReactionIds",
            "reaction_names",
            "convert_record",
            "kind_code",
            "kind_name",
            "record_from_atoms",
            "record_to_atoms",
            "validate_record",
        ),
        "record",
    ),
    **dict.fromkeys(("PHYSICS_RTOL", "PhysicsCheck", "PhysicsReport"), "physics"),
    "HDF5AtomsData": "hdf5",
    "HessianASEAtomsData": "ase_db",
    **dict.fromkeys(
        ("CriticalPointSplit", "RandomStructureSplit", "ReactionSplit"), "splitting"
    ),
    "HessianDataModule": "datamodule",
    **dict.fromkeys(
        (
            "RecordWriter",
            "atomic_output",
            "backend_of",
            "check_file",
            "file_metadata",
            "file_reactions",
            "file_units",
            "iread",
            "iread_records",
            "open_dataset",
            "read_records",
            "write",
            "write_records",
        ),
        "io",
    ),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    else:  # a submodule not imported yet (``data.storage``)
        try:
            value = import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(
                f"module {__name__!r} has no attribute {name!r}"
            ) from None
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
