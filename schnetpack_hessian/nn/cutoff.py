r"""A C²-smooth cutoff function for curvature (Hessian) training.

SchNetPack's :class:`~schnetpack.nn.CosineCutoff`,
:math:`f(r) = \tfrac12[\cos(\pi r/r_c) + 1]`, is only C¹: :math:`f''(r_c^-) =
\tfrac{\pi^2}{2r_c^2} \neq 0 = f''(r_c^+)`, so every predicted Hessian jumps when an atom
pair crosses the cutoff.  The quintic "smootherstep"

.. math::

    f(x) = 1 - 10x^3 + 15x^4 - 6x^5,\qquad x = r/r_c \in [0, 1],

has :math:`f(r_c) = f'(r_c) = f''(r_c) = 0` (and :math:`f'(0) = f''(0) = 0`), so energy,
forces and Hessians are continuous everywhere.
"""

import torch
import torch.nn as nn

__all__ = ["smoothstep_cutoff", "SmoothstepCutoff"]


def smoothstep_cutoff(distances: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """C² cutoff values for interatomic distances (same shape, dimensionless)."""
    x = distances / cutoff
    inside = (x < 1.0).to(distances.dtype)
    x = x * inside
    value = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)
    return value * inside


class SmoothstepCutoff(nn.Module):
    """C²-smooth drop-in replacement for :class:`schnetpack.nn.CosineCutoff`.

    Args:
        cutoff: cutoff radius (length unit of the model, usually Å).
    """

    def __init__(self, cutoff: float):
        super().__init__()
        self.register_buffer("cutoff", torch.tensor([cutoff]))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return smoothstep_cutoff(input, self.cutoff)
