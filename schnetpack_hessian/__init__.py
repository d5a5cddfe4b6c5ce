"""schnetpack-hessian: train SchNetPack potentials on Hessians.

- :class:`Hessian`: output module for exact batched Hessians and HVP probes.
- :class:`HessianOutput`: Hessian loss and metrics for ``AtomisticTask``.
- :class:`HessianTask`: ``AtomisticTask`` whose checkpoints reload under torch >= 2.6.
- :mod:`schnetpack_hessian.data`: Hessian training files and ``HessianDataModule``.
- :class:`HessianCalculator`: ASE calculator with ``get_hessian`` (eV/Å²).
- :mod:`schnetpack_hessian.nn`: the C²-smooth cutoff for curvature training.
"""

from importlib import import_module
from typing import Any, List

from schnetpack_hessian import properties

__version__ = "0.1.0"

#: public name → module that defines it; imported on first use (PEP 562), so that
#: ``import schnetpack_hessian.generate`` does not load torch: tblite's C extension
#: must find the system libgomp before torch loads its older copy
_LAZY = {
    "Hessian": "schnetpack_hessian.hessian",
    "HessianError": "schnetpack_hessian.hessian",
    "HessianKeys": "schnetpack_hessian.plan",
    "ProbeSettings": "schnetpack_hessian.plan",
    "PassSettings": "schnetpack_hessian.plan",
    "HessianSchedule": "schnetpack_hessian.plan",
    "HessianCalculator": "schnetpack_hessian.calculator",
    "evaluate": "schnetpack_hessian.evaluation",
    "HessianMAE": "schnetpack_hessian.losses",
    "HessianOutput": "schnetpack_hessian.losses",
    "HessianRMSE": "schnetpack_hessian.losses",
    "HessianTask": "schnetpack_hessian.task",
    "Teacher": "schnetpack_hessian.teacher",
    "NonFiniteLossError": "schnetpack_hessian.task",
    "nn": "schnetpack_hessian.nn",
}

__all__ = sorted(_LAZY) + ["properties", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'schnetpack_hessian' has no attribute {name!r}")
    module = import_module(_LAZY[name])
    value = module if module.__name__.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
