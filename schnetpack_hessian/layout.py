"""Conversions between the square ``(3N, 3N)`` Hessian and SchNetPack's block layout.

SchNetPack stores a molecule's Hessian as ``(N², 3, 3)``: block ``i·N + j`` is the 3×3
matrix d²E/dR_i dR_j.  Collating with ``torch.cat(dim=0)`` then stacks molecules of
different sizes into ``(ΣN², 3, 3)``.  Every reshape in the package goes through here.
"""

from typing import Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["square_to_blocks", "blocks_to_square", "n_atoms_from_blocks"]


def square_to_blocks(hessian: ArrayLike) -> ArrayLike:
    """Square Hessian(s) ``(..., 3N, 3N)`` → block layout ``(..., N², 3, 3)``."""
    n3 = hessian.shape[-1]
    if hessian.shape[-2] != n3 or n3 % 3 != 0:
        raise ValueError(
            f"expected a square Hessian of shape (3N, 3N), got {tuple(hessian.shape)}"
        )
    n = n3 // 3
    lead = tuple(hessian.shape[:-2])
    h = hessian.reshape(lead + (n, 3, n, 3))
    if isinstance(h, torch.Tensor):
        h = h.transpose(-3, -2)
    else:
        h = np.swapaxes(h, -3, -2)
    return h.reshape(lead + (n * n, 3, 3))


def n_atoms_from_blocks(n_blocks: int) -> int:
    """Number of atoms N of a block-layout Hessian with ``N²`` blocks."""
    n = int(round(n_blocks**0.5))
    if n * n != n_blocks:
        raise ValueError(f"{n_blocks} Hessian blocks is not a square number N²")
    return n


def blocks_to_square(blocks: ArrayLike) -> ArrayLike:
    """Block layout ``(..., N², 3, 3)`` → square Hessian(s) ``(..., 3N, 3N)``."""
    if tuple(blocks.shape[-2:]) != (3, 3):
        raise ValueError(
            f"expected Hessian blocks of shape (N², 3, 3), got {tuple(blocks.shape)}"
        )
    n = n_atoms_from_blocks(blocks.shape[-3])
    lead = tuple(blocks.shape[:-3])
    h = blocks.reshape(lead + (n, n, 3, 3))
    if isinstance(h, torch.Tensor):
        h = h.transpose(-3, -2)
    else:
        h = np.swapaxes(h, -3, -2)
    return h.reshape(lead + (3 * n, 3 * n))
