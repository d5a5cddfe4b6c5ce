"""Test helpers shared by the data and converter tests (and by users' own tests):
random molecules with energies, forces, symmetric Hessians and labels, and a smooth
invariant model surface whose Hessians pass the physics checks."""

from itertools import combinations
from typing import Callable, List, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from schnetpack_hessian import properties as P

__all__ = [
    "random_hessian",
    "make_atoms",
    "assert_atoms_equal",
    "invariant_surface",
    "internal_projector",
]

Surface = Callable[[np.ndarray], Tuple[float, np.ndarray, np.ndarray]]


def random_hessian(rng: np.random.Generator, n_atoms: int, scale: float = 30.0):
    """A symmetric float64 ``(3N, 3N)`` matrix with entries of order ``scale``."""
    a = rng.normal(size=(3 * n_atoms, 3 * n_atoms)) * scale
    return 0.5 * (a + a.T)


def make_atoms(
    n_structures: int = 12,
    seed: int = 0,
    missing_every: int = 4,
    n_reactions: int = 3,
    sizes=(2, 3, 5),
) -> List[Atoms]:
    """Random H/C/N/O structures (eV, Å) with kinds cycling through all labels.

    Energy, forces and Hessian of each structure come from its own
    :func:`invariant_surface`, so they are consistent and pass the physics checks.
    Every ``missing_every``-th structure has no Hessian (``info["hessian"] = None``).
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_structures):
        n = sizes[i % len(sizes)]
        atoms = Atoms(
            numbers=rng.choice([1, 6, 7, 8], size=n),
            positions=rng.normal(size=(n, 3)) * 1.5,
        )
        energy, forces, hessian = invariant_surface(rng, n)(atoms.positions)
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(energy - 100.0 * n), forces=forces
        )
        missing = missing_every and i % missing_every == missing_every - 1
        atoms.info[P.hessian] = None if missing else hessian
        atoms.info[P.kind] = P.KINDS[i % len(P.KINDS)]
        atoms.info[P.reaction] = i % n_reactions
        out.append(atoms)
    return out


def assert_atoms_equal(a: Atoms, b: Atoms, exact: bool = True):
    """Numbers, positions, energy, forces, Hessian and labels identical (or close);
    an energy or forces missing from one calculator's results must be missing from
    the other's."""
    check = np.testing.assert_array_equal if exact else np.testing.assert_allclose
    np.testing.assert_array_equal(a.numbers, b.numbers)
    check(a.positions, b.positions)
    for name in ("energy", "forces"):
        ra = (getattr(a.calc, "results", None) or {}).get(name)
        rb = (getattr(b.calc, "results", None) or {}).get(name)
        assert (ra is None) == (rb is None), f"{name} present in only one structure"
        if ra is not None:
            check(np.asarray(ra), np.asarray(rb))
    ha, hb = a.info.get(P.hessian), b.info.get(P.hessian)
    assert (ha is None) == (hb is None)
    if ha is not None:
        check(np.asarray(ha), np.asarray(hb))
    assert a.info.get(P.kind, "other") == b.info.get(P.kind, "other")
    assert a.info.get(P.reaction, -1) == b.info.get(P.reaction, -1)


def invariant_surface(
    rng: np.random.Generator, n_atoms: int, max_diagonal: float = 80.0
) -> Surface:
    r"""A smooth energy of ``n_atoms`` atoms, invariant under rigid motions, with
    exact forces and Hessian (so the sum rules hold to round-off).

    .. math::

        E = s \Big[\sum_a \tfrac12 k_a (d_a - b_a)^2
            + \tfrac12 c \big(\textstyle\sum_a w_a d_a\big)^2\Big]

    over all pair distances :math:`d_a`; the coupling term makes the off-diagonal 3×3
    blocks asymmetric, so transposed blocks are visible.  ``s`` scales the largest
    diagonal element at a reference geometry to ``max_diagonal`` (80 is a plausible
    force constant in eV/Å², Hartree/Bohr², Hartree/Å² and kcal/mol/Å² alike).

    Returns:
        ``surface(positions (N, 3)) -> (energy, forces (N, 3), hessian (3N, 3N))``.
    """
    pairs = list(combinations(range(n_atoms), 2))
    k = rng.uniform(0.5, 1.5, len(pairs))
    b = rng.uniform(1.0, 1.6, len(pairs))
    w = rng.normal(size=len(pairs))
    m = np.diag(k) + 0.3 * np.outer(w, w)

    def raw(x: np.ndarray):
        x = np.asarray(x, dtype=np.float64).reshape(n_atoms, 3)
        jac = np.zeros((len(pairs), 3 * n_atoms))
        d = np.empty(len(pairs))
        units = []
        for a, (i, j) in enumerate(pairs):
            r = x[i] - x[j]
            d[a] = np.linalg.norm(r)
            u = r / d[a]
            units.append(u)
            jac[a, 3 * i : 3 * i + 3] = u
            jac[a, 3 * j : 3 * j + 3] = -u
        dedd = k * (d - b) + 0.3 * (w @ d) * w
        energy = 0.5 * np.sum(k * (d - b) ** 2) + 0.15 * (w @ d) ** 2
        hessian = jac.T @ m @ jac
        for a, (i, j) in enumerate(pairs):
            block = dedd[a] * (np.eye(3) - np.outer(units[a], units[a])) / d[a]
            for p, q, sign in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                hessian[3 * p : 3 * p + 3, 3 * q : 3 * q + 3] += sign * block
        return energy, -(jac.T @ dedd).reshape(n_atoms, 3), hessian

    reference = rng.normal(size=(n_atoms, 3)) * 1.2
    scale = max_diagonal / np.max(np.diag(raw(reference)[2]))

    def surface(x: np.ndarray):
        energy, forces, hessian = raw(x)
        return scale * energy, scale * forces, scale * hessian

    return surface


def internal_projector(positions: np.ndarray) -> np.ndarray:
    """``(3N, 3N)`` projector onto the directions orthogonal to the rigid motions
    (translations and rotations about the centroid) at ``positions`` (N, 3)."""
    x = np.asarray(positions, dtype=np.float64)
    c = x - x.mean(axis=0)
    n = len(x)
    directions = [np.tile(np.eye(3)[k], n) for k in range(3)]
    directions += [np.cross(np.eye(3)[k], c).ravel() for k in range(3)]
    u, sing, _ = np.linalg.svd(np.stack(directions, axis=1), full_matrices=False)
    rigid = u[:, sing > 1e-8 * sing[0]]
    return np.eye(3 * n) - rigid @ rigid.T
