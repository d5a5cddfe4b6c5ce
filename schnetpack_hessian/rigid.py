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

import torch

__all__ = ["RigidBasis", "rigid_basis", "rigid_products", "sum_rule_residuals"]

#: singular values below this fraction of the largest one are not used as rigid
#: directions (near-linear molecules: the ill-conditioned rotation goes to the passes)
RANK_TOLERANCE = 1e-3


@dataclass
class RigidBasis:
    """Per-molecule orthonormal split of Cartesian space, packed like the positions.

    Attributes:
        rigid: ``(r_max, ΣN, 3)`` orthonormal rigid-motion directions of every molecule
            (zero where a molecule has fewer than ``r_max``).
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
        # e_k × x for k = x, y, z: (M, N, comp, k)
        rot = torch.stack(
            [torch.cross(eye[k].expand_as(centred), centred, dim=-1) for k in range(3)],
            dim=-1,
        )
        columns.append(rot)
    directions = torch.cat(columns, dim=-1)
    return directions.reshape(n_mol, 3 * n_at, -1)


def rigid_basis(
    positions: torch.Tensor, n_atoms: torch.Tensor, rotations: bool = True
) -> RigidBasis:
    """Rigid directions and their orthonormal complement for every molecule.

    Computed in float64 (SVD of the ``3N × 6`` rigid directions, molecules of equal
    size together) and returned in the dtype and device of ``positions``.

    Args:
        positions: packed positions ``(ΣN, 3)`` (Å).
        n_atoms: atoms per molecule ``(B,)``.
        rotations: use the rotations as well as the translations (False for periodic
            cells).
    """
    device, dtype = positions.device, positions.dtype
    # tiny SVDs: faster on the CPU than on any accelerator
    pos64 = positions.detach().to(device="cpu", dtype=torch.float64)
    counts = n_atoms.tolist()
    starts = [0]
    for n in counts[:-1]:
        starts.append(starts[-1] + n)
    n_total, k = int(sum(counts)), 6 if rotations else 3
    # filled molecule by molecule, then trimmed to the largest rank / complement
    rigid = torch.zeros((k, n_total, 3), dtype=torch.float64)
    coeffs = torch.zeros((n_total, 3, k), dtype=torch.float64)
    complement = torch.zeros((3 * max(counts), n_total, 3), dtype=torch.float64)
    r_max = d_max = 0
    for n in sorted(set(counts)):
        members = [m for m, c in enumerate(counts) if c == n]
        index = torch.tensor([starts[m] + a for m in members for a in range(n)])
        pos = pos64[index].reshape(len(members), n, 3)
        u_full, sing, vh = torch.linalg.svd(
            _rigid_directions(pos, rotations), full_matrices=True
        )
        keep = sing > RANK_TOLERANCE * sing[:, :1]  # (M, k)
        for row in range(len(members)):
            atoms = index[row * n : (row + 1) * n]
            r = int(keep[row].sum())
            d = 3 * n - r
            rigid[:r, atoms] = u_full[row, :, :r].T.reshape(r, n, 3)
            complement[:d, atoms] = u_full[row, :, r:].T.reshape(d, n, 3)
            if rotations:
                # U = D V S⁻¹ with D = [translations, rotations]: rotation coefficients
                coeffs[atoms, :, :r] = (vh[row, :r].T / sing[row, :r])[3:]
            r_max, d_max = max(r_max, r), max(d_max, d)
    rigid, coeffs, complement = rigid[:r_max], coeffs[..., :r_max], complement[:d_max]
    return RigidBasis(
        rigid=rigid.to(device=device, dtype=dtype),
        rotation_coeffs=coeffs.to(device=device, dtype=dtype),
        complement=complement.to(device=device, dtype=dtype),
    )


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
