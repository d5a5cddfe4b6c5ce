"""Neural-network pieces that make SchNetPack models smooth enough for Hessians."""

from schnetpack_hessian.nn.cutoff import SmoothstepCutoff, smoothstep_cutoff

__all__ = ["SmoothstepCutoff", "smoothstep_cutoff"]
