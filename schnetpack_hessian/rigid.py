r"""Rigid-body invariance: Hessian columns that follow from the gradient alone.

A molecular energy that does not change when the whole molecule is translated or
rotated satisfies, at *every* geometry (not only at stationary points),

.. math::

    H\,t = 0, \qquad H\,(\omega \times (r - c)) = \omega \times g,

for every translation :math:`t` (the same vector on every atom), every rotation axis
:math:`\omega`, any centre :math:`c` and the gradient :math:`g = \partial E/\partial R`
(differentiate :math:`\sum_b g_b\cdot(\omega\times r_b) = 0` with respect to
:math:`r_a`).  The products of the Hessian with the (up to) six rigid-motion
directions are therefore known from the forces, and only the ``3N − 6`` (``3N − 5`` for
linear molecules) directions orthogonal to them need seeded passes.  With an
orthonormal basis :math:`V = [U, C]` of :math:`\mathbb{R}^{3N}` (``U`` rigid, ``C`` its
complement)

.. math::

    H = H V V^\top = (H U)\,U^\top + (H C)\,C^\top .

Every SchNetPack model of molecules built from invariant or equivariant
representations (SchNet, PaiNN, SO3net, field-free) has such an energy; a periodic
cell keeps only the translations (rotating atoms inside a fixed cell changes the
energy); external fields break both.  :class:`~schnetpack_hessian.Hessian` checks the
relations once before it relies on them.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from schnetpack_hessian.packing import PackedBatch, packed_sizes

__all__ = [
    "RigidBasis",
    "rigid_basis",
    "rigid_products",
    "complement_width",
    "sum_rule_residuals",
]

#: singular values of the rigid directions below this fraction of the largest one are
#: not used as rigid directions (near-linear molecules: the ill-conditioned rotation
#: goes to the passes)
RANK_TOLERANCE = 1e-3
#: the host counts a rotation as rigid only above this multiple of the tolerance, so
#: that rounding differences between the host's and the device's eigen-solvers can
#: never leave an internal direction without a seeded pass
HOST_MARGIN = 2.0
#: cyclic Jacobi sweeps of the 3×3 inertia tensors (4 leave 4e-14 of the matrix, 5 reach
#: rounding, on random and on degenerate matrices)
JACOBI_SWEEPS = 5


@dataclass
class RigidBasis:
    """Per-molecule orthonormal split of Cartesian space, packed like the positions.

    Attributes:
        rigid: ``(r_max, ΣN, 3)`` orthonormal rigid-motion directions of every molecule
            (zero where a molecule has fewer than ``r_max``): three translations, then
            the rotations about the principal axes that are used.
        rotation_coeffs: ``(ΣN, 3, r_max)``: rigid direction ``j`` of the molecule of
            atom ``a`` is ``Σ_k rotation_coeffs[a, k, j] · (e_k × (r - c))`` plus a
            translation; the translation part needs no coefficients (``H t = 0``).
        complement: ``(d_max, ΣN, 3)`` orthonormal directions orthogonal to ``rigid``,
            the seeds of the Hessian-vector passes (zero padding as above).
    """

    rigid: torch.Tensor
    rotation_coeffs: torch.Tensor
    complement: torch.Tensor


def _rigid_directions(positions: torch.Tensor, rotations: bool) -> torch.Tensor:
    """Unnormalised rigid directions of molecules with equal atom counts.

    Args:
        positions: ``(M, N, 3)``.
        rotations: include the three rotations about the centroid.

    Returns:
        ``(M, 3N, k)`` translation (and rotation) directions, ``k`` = 3 or 6.
    """
    n_mol, n_at, _ = positions.shape
    eye = torch.eye(3, dtype=positions.dtype, device=positions.device)
    translations = eye[None, None].expand(n_mol, n_at, 3, 3)  # (M, N, comp, k)
    centred = positions - positions.mean(dim=1, keepdim=True)
    columns = [translations]
    if rotations:
        columns.append(_rotations(centred, eye))
    directions = torch.cat(columns, dim=-1)
    return directions.reshape(n_mol, 3 * n_at, -1)


def _rotations(centred: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
    """``e_k × x`` for k = x, y, z: ``(..., comp, k)`` of centred positions."""
    return torch.stack(
        [torch.cross(eye[k].expand_as(centred), centred, dim=-1) for k in range(3)],
        dim=-1,
    )


def _symmetric_eig3(a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of symmetric 3×3 matrices.

    Cyclic Jacobi rotations, a fixed number of sweeps: device operations only
    (``torch.linalg.eigh`` reads its error codes on the host on a GPU).

    Args:
        a: ``(B, 3, 3)`` symmetric.

    Returns:
        ``(B, 3)`` eigenvalues and ``(B, 3, 3)`` orthonormal eigenvectors.
    """
    eye = torch.eye(3, dtype=a.dtype, device=a.device)
    vectors = eye.expand_as(a)
    for _ in range(JACOBI_SWEEPS):
        for p, q in ((0, 1), (0, 2), (1, 2)):
            # J = I + (c - 1)(e_p e_pᵀ + e_q e_qᵀ) + s(e_p e_qᵀ - e_q e_pᵀ) zeroes a_pq
            theta = 0.5 * torch.atan2(2 * a[:, p, q], a[:, q, q] - a[:, p, p])
            plane = eye[:, [p]] * eye[[p], :] + eye[:, [q]] * eye[[q], :]
            turn = eye[:, [p]] * eye[[q], :] - eye[:, [q]] * eye[[p], :]
            c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
            rotation = eye + (c - 1) * plane + s * turn
            a = rotation.transpose(1, 2) @ a @ rotation
            vectors = vectors @ rotation
    values = torch.diagonal(a, dim1=1, dim2=2)
    values, order = torch.sort(values, dim=1, descending=True)
    vectors = torch.gather(vectors, 2, order[:, None, :].expand_as(vectors))
    return values, vectors


def _kept_rotations(
    inertia_values: torch.Tensor, n_atoms: torch.Tensor, tolerance: float
) -> torch.Tensor:
    """Which principal rotations serve as rigid directions, ``(B, 3)`` bool.

    The rigid directions' singular values are ``√N`` (translations) and the square
    roots of the inertia eigenvalues (rotations); a rotation is used when its singular
    value exceeds ``tolerance`` times the largest one.
    """
    sing = inertia_values.clamp_min(0).sqrt()
    largest = torch.maximum(n_atoms.to(sing.dtype).sqrt(), sing[:, 0])
    return sing > tolerance * largest[:, None]


def _inertia(centred: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``Σ_a (e_j × x_a)·(e_k × x_a)`` (inertia tensors of unit masses)
    of centred positions ``(B, N, 3)`` (zero rows for padding), ``(B, 3, 3)``."""
    eye = torch.eye(3, dtype=centred.dtype, device=centred.device)
    squared = (centred * centred).sum((1, 2))
    return squared[:, None, None] * eye - torch.einsum("bai,baj->bij", centred, centred)


def complement_width(packed: PackedBatch, rotations: bool = True) -> Optional[int]:
    """Internal directions of the largest complement, ``max_m (3N_m - r_m)``, from the
    host data of the batch (None when its host positions are unknown).

    With ``rotations``, a molecule's rank ``r_m`` is 3 plus the rotations it uses,
    which depends on its geometry (one fewer for linear molecules); the host counts a
    rotation only above ``HOST_MARGIN`` times :data:`RANK_TOLERANCE`, the device's
    basis uses every rotation above the tolerance, so every internal direction the
    device finds has a slot.
    """
    packing = packed.packing
    if not rotations or not packing.n_atoms:
        return max(3 * packing.max_atoms - 3, 0)
    if "complement_width" in packing.derived:
        return packing.derived["complement_width"]
    if packing.positions is None:
        return None
    positions = packing.positions.to(torch.float64)
    n_atoms = torch.tensor(packing.n_atoms)
    idx_m = torch.repeat_interleave(torch.arange(len(n_atoms)), n_atoms)
    centroid = torch.zeros((len(n_atoms), 3), dtype=torch.float64)
    centroid.index_add_(0, idx_m, positions)
    centred = positions - (centroid / n_atoms[:, None])[idx_m]
    products = centred[:, :, None] * centred[:, None, :]  # (ΣN, 3, 3)
    inertia = torch.zeros((len(n_atoms), 3, 3), dtype=torch.float64)
    inertia.index_add_(0, idx_m, -products)
    squared = torch.zeros(len(n_atoms), dtype=torch.float64)
    squared.index_add_(0, idx_m, (centred * centred).sum(1))
    inertia += squared[:, None, None] * torch.eye(3, dtype=torch.float64)
    values = torch.linalg.eigvalsh(inertia).flip(1)  # host tensors
    kept = _kept_rotations(values, n_atoms, HOST_MARGIN * RANK_TOLERANCE).sum(1)
    width = int((3 * n_atoms - 3 - kept).max())
    packing.derived["complement_width"] = width
    return width


def rigid_basis(
    positions: torch.Tensor,
    n_atoms: torch.Tensor,
    rotations: bool = True,
    packed: Optional[PackedBatch] = None,
) -> RigidBasis:
    """Rigid directions and their orthonormal complement for every molecule.

    Computed on the device of ``positions`` in float64, all molecules at once (padded
    to the largest): translations ``e_c/√N``; rotations about the principal axes of
    the inertia tensor (Jacobi eigenvectors, normalised by the square roots of the
    eigenvalues, those below :data:`RANK_TOLERANCE` left out); the complement from
    the Householder reflections of a QR factorisation of the rigid directions.
    Returned in the dtype of ``positions``.  The number of complement directions
    comes from the batch's host data (:func:`complement_width`); without it, it is
    read from the device (a host synchronisation on a GPU).

    Args:
        positions: packed positions ``(ΣN, 3)`` (Å).
        n_atoms: atoms per molecule ``(B,)``.
        rotations: use the rotations as well as the translations (False for periodic
            cells).
        packed: the batch's bookkeeping (default: :func:`~schnetpack_hessian.packing.
            packed_sizes` of ``n_atoms``).
    """
    packed = packed if packed is not None else packed_sizes(n_atoms)
    dtype = positions.dtype
    n_mol, n_max = packed.packing.n_molecules, packed.packing.max_atoms
    dim = 3 * n_max
    atom, real = packed.slots
    mask = real[..., None].to(torch.float64)
    x = positions.detach().to(torch.float64)[atom] * mask  # (B, n_max, 3)
    count = n_atoms.to(torch.float64)
    centred = (x - (x.sum(1) / count[:, None])[:, None, :]) * mask
    eye = torch.eye(3, dtype=torch.float64, device=positions.device)
    # translations e_c / √N on each molecule's atoms: (B, n_max, comp, 3)
    columns = [mask[..., None] * eye / count.sqrt()[:, None, None, None]]
    coeffs = torch.zeros((n_mol, 3, 3), dtype=torch.float64, device=positions.device)
    if rotations:
        values, vectors = _symmetric_eig3(_inertia(centred))
        kept = _kept_rotations(values, n_atoms, RANK_TOLERANCE)
        scale = torch.where(kept, values.clamp_min(1e-300).rsqrt(), 0.0)
        rot_coeffs = vectors * scale[:, None, :]  # (B, k, j): u_j = Σ_k R_k w_kj / √λ_j
        columns.append(
            torch.einsum("back,bkj->bacj", _rotations(centred, eye), rot_coeffs)
        )
        coeffs = torch.cat([coeffs, rot_coeffs], dim=2)
        rank = 3 + kept.sum(1)
    else:
        rank = torch.full_like(n_atoms, 3)
    rigid = torch.cat(columns, dim=-1).reshape(n_mol, dim, -1)  # (B, 3 n_max, r_max)
    q = _householder_q(rigid)
    width = complement_width(packed, rotations)
    if width is None:  # no host positions: read the ranks (a host synchronisation)
        width = int((3 * n_atoms - rank).max())
    column = rank[:, None] + torch.arange(width, device=positions.device)[None, :]
    valid = column < 3 * n_atoms[:, None]
    complement = (
        torch.gather(
            q,
            2,
            column.clamp(max=max(dim - 1, 0))[:, None, :].expand(n_mol, dim, width),
        )
        * valid[:, None, :]
    )
    idx_m, local = packed.idx_m, packed.local

    def packed_directions(directions: torch.Tensor) -> torch.Tensor:
        """(B, 3 n_max, S) per-molecule directions → (S, ΣN, 3) packed."""
        per_atom = directions.reshape(n_mol, n_max, 3, -1)[idx_m, local]
        return per_atom.permute(2, 0, 1).to(dtype)

    return RigidBasis(
        rigid=packed_directions(rigid),
        rotation_coeffs=coeffs[idx_m].to(dtype),
        complement=packed_directions(complement),
    )


def _householder_q(columns: torch.Tensor) -> torch.Tensor:
    """The orthogonal ``Q`` of a QR factorisation of ``(B, M, r)`` columns by
    Householder reflections, ``(B, M, M)``; a zero column (a direction a molecule
    does not have) reflects nothing.  Columns ``r_m ..`` of ``Q`` span the orthogonal
    complement of a molecule's first ``r_m`` (nonzero) columns; rows that are zero in
    every column (padding) stay untouched."""
    n_mol, dim, n_cols = columns.shape
    a = columns
    q = torch.eye(dim, dtype=a.dtype, device=a.device).expand(n_mol, dim, dim)
    rows = torch.arange(dim, device=a.device)
    for j in range(min(n_cols, dim)):
        x = a[:, :, j] * (rows >= j)  # (B, M): the column from row j down
        norm = torch.linalg.vector_norm(x, dim=1)
        sign = torch.where(x[:, j] >= 0, 1.0, -1.0).to(a.dtype)
        v = x + (sign * norm)[:, None] * (rows == j)
        vv = (v * v).sum(1)
        beta = torch.where(vv > 0, 2.0 / vv.clamp_min(1e-300), 0.0)  # (B,)
        # H = I - β v vᵀ applied to the columns and accumulated: Q ← Q H
        a = a - beta[:, None, None] * v[:, :, None] * (v[:, None, :] @ a)
        q = q - beta[:, None, None] * (q @ v[:, :, None]) * v[:, None, :]
    return q


def rigid_products(gradient: torch.Tensor, basis: RigidBasis) -> torch.Tensor:
    """``H u`` for every rigid direction ``u`` of ``basis``, ``(r_max, ΣN, 3)``.

    Uses ``H t = 0`` and ``H (e_k × (r - c)) = e_k × g``; differentiable through
    ``gradient`` (``(ΣN, 3)``, dE/dR), so a loss on the result trains through the
    force graph.
    """
    eye = torch.eye(3, dtype=gradient.dtype, device=gradient.device)
    # e_k × g for each atom: (ΣN, k, comp)
    cross = torch.stack(
        [torch.cross(eye[k].expand_as(gradient), gradient, dim=-1) for k in range(3)],
        dim=1,
    )
    return torch.einsum("nkj,nkc->jnc", basis.rotation_coeffs, cross)


def sum_rule_residuals(
    hessian: torch.Tensor,
    positions: torch.Tensor,
    gradient: torch.Tensor,
    rotations: bool = True,
) -> torch.Tensor:
    r"""Relative residuals of :math:`H t = 0` and :math:`H (\omega \times (r - c)) =
    \omega \times g` for one molecule (reference data or a model).

    For each rigid direction :math:`d_j` (three translations, then three rotations
    about the centroid) with expected product :math:`b_j` (0, resp.
    :math:`e_k \times g`):

    .. math::

        \rho_j = \frac{\lVert H d_j - b_j \rVert}{\lVert H \rVert_2 \lVert d_j \rVert
        + \lVert b_j \rVert}

    Args:
        hessian: ``(3N, 3N)`` d²E/dR².
        positions: ``(N, 3)``, in the distance unit of ``hessian`` and ``gradient``.
        gradient: ``(N, 3)`` dE/dR (= −forces), in units consistent with ``hessian``.
        rotations: include the rotations (False for periodic cells).

    Returns:
        ``(3,)`` or ``(6,)`` residuals; 0 for a direction of (near) zero length (the
        axis of a linear molecule).
    """
    n = positions.shape[0]
    directions = _rigid_directions(positions[None], rotations)[0]  # (3N, k)
    eye = torch.eye(3, dtype=gradient.dtype, device=gradient.device)
    expected = [torch.zeros(3 * n, dtype=gradient.dtype, device=gradient.device)] * 3
    if rotations:
        expected += [
            torch.cross(eye[k].expand_as(gradient), gradient, dim=-1).reshape(-1)
            for k in range(3)
        ]
    expected = torch.stack(expected, dim=1)  # (3N, k)
    norm_h = torch.linalg.matrix_norm(hessian, ord=2)
    length = torch.linalg.vector_norm(directions, dim=0)
    misfit = torch.linalg.vector_norm(hessian @ directions - expected, dim=0)
    scale = norm_h * length + torch.linalg.vector_norm(expected, dim=0)
    degenerate = (length <= 1e-8 * length.max()) | (scale == 0)
    return torch.where(degenerate, torch.zeros_like(misfit), misfit / scale)
