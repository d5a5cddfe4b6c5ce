"""Geometry helpers: alignment, RMSD, covalent bond graphs, clashes.

All functions assume atom-mapped structures (atom ``i`` of one geometry is atom
``i`` of the other); positions are in Å.
"""

from typing import List, Tuple

import numpy as np
from ase.data import covalent_radii

__all__ = [
    "kabsch_rotation",
    "kabsch_align",
    "rmsd",
    "bond_graph",
    "bond_changes",
    "n_fragments",
    "has_clash",
]


def kabsch_rotation(
    mobile: np.ndarray, reference: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The proper rotation that superimposes ``mobile`` on ``reference``.

    Args:
        mobile: ``(N, 3)`` positions in Å.
        reference: ``(N, 3)`` positions in Å.

    Returns:
        ``(rot, c_mobile, c_reference)``: ``(3, 3)`` rotation and the two centroids;
        the aligned copy is ``(mobile - c_mobile) @ rot + c_reference`` and a vector
        ``v`` of the mobile frame is ``v @ rot`` in the reference frame.
    """
    a = np.asarray(mobile, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    ca, cb = a.mean(0), b.mean(0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt, ca, cb


def kabsch_align(mobile: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``mobile`` rotated (proper rotation) and translated onto ``reference``.

    Args:
        mobile: ``(N, 3)`` positions in Å.
        reference: ``(N, 3)`` positions in Å.

    Returns:
        ``(N, 3)`` aligned copy of ``mobile`` with minimal RMSD to ``reference``.
    """
    rot, ca, cb = kabsch_rotation(mobile, reference)
    return (np.asarray(mobile, dtype=np.float64) - ca) @ rot + cb


def rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square deviation in Å after optimal proper superposition.

    Mirror images are *not* superimposed, so enantiomeric geometries (e.g. the two
    skew minima of H2O2) have a non-zero RMSD.
    """
    return float(np.sqrt(np.mean(np.sum((kabsch_align(a, b) - b) ** 2, axis=1))))


def bond_graph(
    numbers: np.ndarray, positions: np.ndarray, scale: float = 1.3
) -> np.ndarray:
    """Covalent bonds: ``d_ij < scale·(r_i + r_j)`` with ASE covalent radii.

    ``scale`` 1.3 keeps H2 bonded at every level used here (GFN2-xTB: 0.777 Å,
    above the 0.775 Å of ``1.25·2·0.31``) and stays well below geminal H···H
    (≈ 1.8 Å) and 1,3 heavy-atom distances.

    Returns:
        ``(N, N)`` boolean adjacency matrix (no self bonds).
    """
    r = covalent_radii[np.asarray(numbers)]
    x = np.asarray(positions, dtype=np.float64)
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    adj = d < scale * (r[:, None] + r[None, :])
    np.fill_diagonal(adj, False)
    return adj


def bond_changes(
    numbers: np.ndarray,
    start: np.ndarray,
    optimised: np.ndarray,
    formed_scale: float = 1.15,
    broken_scale: float = 1.5,
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """Bonds an optimisation formed and broke, with a margin against noise.

    The start geometry's bonds are :func:`bond_graph`'s; a bond counts as formed only
    once the pair comes closer than ``formed_scale·(r_i + r_j)``, as broken only
    once it is further apart than ``broken_scale·(r_i + r_j)``.  A distance that
    merely crosses the 1.3 threshold (the 1,3 distance across a four-membered
    ring: 1.95–2.1 Å) is no change of species.

    Returns:
        ``(formed, broken)``: lists of atom pairs ``(i, j)`` with ``i < j``.
    """
    r = covalent_radii[np.asarray(numbers)]
    r_sum = r[:, None] + r[None, :]
    x = np.asarray(optimised, dtype=np.float64)
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    before = bond_graph(numbers, start)
    upper = np.triu(np.ones_like(before), k=1)
    formed = np.argwhere(upper & ~before & (d < formed_scale * r_sum))
    broken = np.argwhere(upper & before & (d > broken_scale * r_sum))
    return [tuple(map(int, p)) for p in formed], [tuple(map(int, p)) for p in broken]


def n_fragments(adjacency: np.ndarray) -> int:
    """Number of connected components of a bond graph ``(N, N)``."""
    n = len(adjacency)
    seen = np.zeros(n, dtype=bool)
    count = 0
    for start in range(n):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(adjacency[i] & ~seen):
                seen[j] = True
                stack.append(j)
    return count


def has_clash(numbers: np.ndarray, positions: np.ndarray, factor: float = 0.5) -> bool:
    """True if two atoms are closer than ``factor·(r_i + r_j)``."""
    r = covalent_radii[np.asarray(numbers)]
    x = np.asarray(positions, dtype=np.float64)
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return bool(np.any(d < factor * (r[:, None] + r[None, :])))
