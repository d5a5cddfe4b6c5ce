"""schnetpack-hessian: train SchNetPack potentials on Hessians.

- :class:`Hessian`: output module for exact batched Hessians and HVP probes.
- :class:`HessianOutput`: Hessian loss and metrics for ``AtomisticTask``.
- :class:`HessianTask`: ``AtomisticTask`` whose checkpoints reload under torch >= 2.6.
- :mod:`schnetpack_hessian.data`: Hessian training files and ``HessianDataModule``.
- :class:`HessianCalculator`: ASE calculator with ``get_hessian`` (eV/Å²).
- :mod:`schnetpack_hessian.nn`: the C²-smooth cutoff for curvature training.
"""

from schnetpack_hessian import nn, properties
from schnetpack_hessian.calculator import HessianCalculator
from schnetpack_hessian.evaluation import evaluate
from schnetpack_hessian.hessian import Hessian, HessianError
from schnetpack_hessian.losses import HessianMAE, HessianOutput, HessianRMSE
from schnetpack_hessian.task import HessianTask

__version__ = "0.1.0"

__all__ = [
    "Hessian",
    "HessianCalculator",
    "HessianError",
    "HessianMAE",
    "HessianOutput",
    "HessianRMSE",
    "HessianTask",
    "evaluate",
    "nn",
    "properties",
    "__version__",
]
