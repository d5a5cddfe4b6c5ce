"""schnetpack-hessian: train SchNetPack potentials on Hessians."""

from schnetpack_hessian import properties
from schnetpack_hessian.hessian import Hessian
from schnetpack_hessian.losses import HessianOutput

__version__ = "0.1.0"

__all__ = ["Hessian", "HessianOutput", "properties", "__version__"]
