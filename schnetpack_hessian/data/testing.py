"""Test helpers shared by the data and converter tests (and by users' own tests):
random molecules with energies, forces, symmetric Hessians and labels."""

from typing import List

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from schnetpack_hessian import properties as P

__all__ = ["random_hessian", "make_atoms", "assert_atoms_equal"]


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
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=float(rng.normal() * 100.0),
            forces=rng.normal(size=(n, 3)),
        )
        missing = missing_every and i % missing_every == missing_every - 1
        atoms.info[P.hessian] = None if missing else random_hessian(rng, n)
        atoms.info[P.kind] = P.KINDS[i % len(P.KINDS)]
        atoms.info[P.reaction] = i % n_reactions
        out.append(atoms)
    return out


def assert_atoms_equal(a: Atoms, b: Atoms, exact: bool = True):
    """Numbers, positions, energy, forces, Hessian and labels identical (or close)."""
    check = np.testing.assert_array_equal if exact else np.testing.assert_allclose
    np.testing.assert_array_equal(a.numbers, b.numbers)
    check(a.positions, b.positions)
    check(a.get_potential_energy(), b.get_potential_energy())
    check(a.get_forces(), b.get_forces())
    ha, hb = a.info.get(P.hessian), b.info.get(P.hessian)
    assert (ha is None) == (hb is None)
    if ha is not None:
        check(np.asarray(ha), np.asarray(hb))
    assert a.info.get(P.kind, "other") == b.info.get(P.kind, "other")
    assert a.info.get(P.reaction, -1) == b.info.get(P.reaction, -1)
