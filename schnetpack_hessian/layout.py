"""Hessian layouts and the index bookkeeping of packed batches.

SchNetPack stores a molecule's Hessian as ``(N², 3, 3)``: block ``i·N + j`` is the 3×3
matrix d²E/dR_i dR_j.  Collating with ``torch.cat(dim=0)`` then stacks molecules of
different sizes into ``(ΣN², 3, 3)``.  Every reshape between that layout and the square
``(3N, 3N)`` matrix, and every index into a packed batch (atom offsets, molecule of an
atom, block indices), goes through here.

The reshapes take numpy arrays or torch tensors and need only numpy; the packed-batch
indices import torch when called.  So the data record, and with it the generator
(which must not load torch before tblite), can use this module.
"""

from typing import TYPE_CHECKING, Optional, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayLike = Union[np.ndarray, "torch.Tensor"]

__all__ = [
    "square_to_blocks",
    "blocks_to_square",
    "n_atoms_from_blocks",
    "split_squares",
    "as_square",
    "atom_offsets",
    "molecule_index",
    "local_atom_index",
    "block_index",
]


def _swap_atom_axes(h: ArrayLike) -> ArrayLike:
    """``(..., a, b, c, d)`` → ``(..., a, c, b, d)`` of an array or a tensor."""
    if isinstance(h, np.ndarray):
        return np.swapaxes(h, -3, -2)
    return h.transpose(-3, -2)


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
    h = _swap_atom_axes(h)
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
    h = _swap_atom_axes(h)
    return h.reshape(lead + (3 * n, 3 * n))


def as_square(hessian: np.ndarray, n_atoms: int) -> np.ndarray:
    """A Hessian in any of the layouts files use → square ``(3N, 3N)``.

    Accepted: flat ``(9N²,)``, square ``(3N, 3N)``, per-atom rows ``(N, 9N)`` (extxyz),
    ``(N, 3, N, 3)`` (all row-major d²E/dR_iα dR_jβ) and SchNetPack's blocks
    ``(N², 3, 3)``.

    Raises:
        ValueError: the shape fits none of these for ``n_atoms`` (the message says
            which were expected).
    """
    n3 = 3 * n_atoms
    if hessian.shape == (n3, n3):
        return hessian
    if hessian.shape == (n_atoms * n_atoms, 3, 3):
        return blocks_to_square(hessian)
    row_major = [(n3 * n3,), (n_atoms, 3 * n3), (n_atoms, 3, n_atoms, 3)]
    if hessian.shape in row_major:
        return hessian.reshape(n3, n3)
    expected = [(n3, n3), (n_atoms * n_atoms, 3, 3)] + row_major
    raise ValueError(
        f"Hessian has shape {tuple(hessian.shape)}; for {n_atoms} atoms expected one "
        f"of {', '.join(str(e) for e in expected)}"
    )


def split_squares(blocks: ArrayLike, n_atoms) -> list:
    """A packed batch Hessian ``(ΣN², 3, 3)`` → one ``(3N, 3N)`` matrix per molecule.

    Args:
        blocks: the batch's Hessian in block layout.
        n_atoms: atoms per molecule (sequence or tensor).
    """
    sizes = [int(n) * int(n) for n in n_atoms]
    if sum(sizes) != blocks.shape[0]:
        raise ValueError(
            f"{blocks.shape[0]} Hessian blocks do not match molecules of "
            f"{[int(n) for n in n_atoms]} atoms ({sum(sizes)} blocks)"
        )
    bounds = np.cumsum([0] + sizes)
    return [blocks_to_square(blocks[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def atom_offsets(n_atoms: "torch.Tensor") -> "torch.Tensor":
    """Index of each molecule's first atom in the packed batch, shape ``(B,)``."""
    import torch

    return torch.cumsum(n_atoms, 0) - n_atoms


def molecule_index(
    n_atoms: "torch.Tensor", n_total: Optional[int] = None
) -> "torch.Tensor":
    """Molecule of every atom of a packed batch, shape ``(ΣN,)`` (SchNetPack's idx_m).

    Args:
        n_atoms: atoms per molecule ``(B,)``.
        n_total: ``ΣN`` when known on the host (no device read); None: read from
            ``n_atoms`` (a host synchronisation for a device tensor).
    """
    import torch

    if n_total is None:
        n_total = int(n_atoms.sum())
    return torch.repeat_interleave(
        torch.arange(len(n_atoms), device=n_atoms.device), n_atoms, output_size=n_total
    )


def local_atom_index(
    n_atoms: "torch.Tensor", n_total: Optional[int] = None
) -> "torch.Tensor":
    """Index of every atom inside its own molecule, shape ``(ΣN,)`` (``n_total`` as
    in :func:`molecule_index`)."""
    import torch

    if n_total is None:
        n_total = int(n_atoms.sum())
    idx_m = molecule_index(n_atoms, n_total)
    return torch.arange(n_total, device=n_atoms.device) - atom_offsets(n_atoms)[idx_m]


def block_index(
    n_atoms: "torch.Tensor", n_blocks: Optional[int] = None
) -> Tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Indices of the ``ΣN²`` Hessian blocks of a packed batch.

    Args:
        n_atoms: atoms per molecule ``(B,)``.
        n_blocks: ``ΣN²`` when known on the host; None: read from ``n_atoms`` (a host
            synchronisation for a device tensor).

    Returns:
        ``(block_m, i_local, j_global)``, each ``(ΣN²,)``: the molecule of every block,
        the local index of its row atom ``i`` and the packed index of its column atom
        ``j``.
    """
    import torch

    device = n_atoms.device
    n_sq = n_atoms * n_atoms
    if n_blocks is None:
        n_blocks = int(n_sq.sum())
    block_m = torch.repeat_interleave(
        torch.arange(len(n_atoms), device=device), n_sq, output_size=n_blocks
    )
    k = torch.arange(n_blocks, device=device) - (torch.cumsum(n_sq, 0) - n_sq)[block_m]
    n_b = n_atoms[block_m]
    i_local = torch.div(k, n_b, rounding_mode="floor")
    j_global = atom_offsets(n_atoms)[block_m] + k - i_local * n_b
    return block_m, i_local, j_global
