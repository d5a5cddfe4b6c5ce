"""Vibrational analysis: mass weighting, rigid-body projection, imaginary modes.

Reference systems are harmonic spring networks whose Hessians are known in closed
form, so frequencies can be checked against analytic values.
"""

import numpy as np
import pytest
from ase import Atoms
from ase.vibrations import VibrationsData

from schnetpack_hessian import vibrations


def spring_hessian(positions, bonds, k, r0=None):
    """Analytic Hessian (3N, 3N) of E = Σ ½ k (|r_i − r_j| − r0)² in eV/Å²."""
    x = np.asarray(positions, dtype=float)
    n = len(x)
    h = np.zeros((3 * n, 3 * n))
    for b, (i, j) in enumerate(bonds):
        d = x[i] - x[j]
        r = np.linalg.norm(d)
        u = d / r
        rr = r if r0 is None else r0[b]
        block = k * np.outer(u, u) + k * (1 - rr / r) * (np.eye(3) - np.outer(u, u))
        for a, c, s in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
            h[3 * a : 3 * a + 3, 3 * c : 3 * c + 3] += s * block
    return h


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.fixture
def bent():
    """A bent triatomic (water-like) at the minimum of its spring network."""
    atoms = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    bonds = [(0, 1), (0, 2), (1, 2)]
    return atoms, spring_hessian(atoms.positions, bonds, 40.0)


def test_conversion_factor():
    # sqrt(1 eV / (Å² amu)) / (2π c) = 521.47 cm⁻¹
    assert vibrations.EV_A2_AMU_TO_CM1 == pytest.approx(521.47, abs=0.01)


def test_diatomic_frequency_is_analytic():
    k = 36.0
    atoms = Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.13]])
    h = spring_hessian(atoms.positions, [(0, 1)], k)
    m1, m2 = atoms.get_masses()
    mu = m1 * m2 / (m1 + m2)
    modes = vibrations.normal_modes(h, atoms.positions, atoms.get_masses())
    assert modes.frequencies.shape == (1,)  # 3N − 5
    assert modes.frequencies[0] == pytest.approx(
        np.sqrt(k / mu) * vibrations.EV_A2_AMU_TO_CM1, rel=1e-10
    )
    # Gaussian's convention: μ = 1/|M^{-1/2} e|², K = λ·μ = qᵀ H q for the unit
    # Cartesian displacement q (what normal-mode sampling needs)
    assert modes.reduced_masses[0] == pytest.approx(
        m1 * m2 * (m1 + m2) / (m1**2 + m2**2), rel=1e-10
    )
    q = modes.cartesian_modes[0]
    assert modes.force_constants[0] == pytest.approx(q @ h @ q, rel=1e-10)


@pytest.mark.parametrize("n_atoms,expected", [(2, 1), (3, 4)])
def test_linear_molecules_keep_3n_minus_5_modes(n_atoms, expected):
    atoms = Atoms("C" * n_atoms, positions=[[0, 0, 1.2 * i] for i in range(n_atoms)])
    bonds = [(i, i + 1) for i in range(n_atoms - 1)]
    h = spring_hessian(atoms.positions, bonds, 30.0)
    freqs = vibrations.frequencies(h, atoms=atoms)
    assert freqs.shape == (3 * n_atoms - 5,) == (expected,)


def test_bent_molecule_matches_ase_and_is_rotation_invariant(bent):
    atoms, h = bent
    freqs = vibrations.frequencies(h, atoms=atoms)
    assert freqs.shape == (3,)
    assert np.all(freqs > 100)
    # ASE does not project, but at a minimum of a rotation-invariant potential its
    # six rigid-body frequencies are zero and the other three agree
    ase_freqs = np.sort(VibrationsData.from_2d(atoms, h).get_frequencies().real)[-3:]
    np.testing.assert_allclose(freqs, ase_freqs, rtol=1e-4)
    rot = random_rotation(np.random.default_rng(0))
    big = np.kron(np.eye(3), rot)
    rotated = vibrations.frequencies(
        big @ h @ big.T, atoms.positions @ rot.T, atoms.get_masses()
    )
    np.testing.assert_allclose(rotated, freqs, rtol=1e-10)


def test_projection_removes_rigid_body_noise(bent):
    """Noise confined to translations/rotations (as from DFT grids) must not
    create or remove imaginary modes."""
    atoms, h = bent
    basis = vibrations.rigid_body_basis(atoms.positions, atoms.get_masses())
    assert basis.shape == (9, 6)
    sqrt_m = np.sqrt(np.repeat(atoms.get_masses(), 3))
    cart = basis * sqrt_m[:, None]  # back to Cartesian force-constant space
    noisy = h - 0.5 * cart @ np.diag([1, 2, 3, 1, 2, 3]) @ cart.T
    np.testing.assert_allclose(
        vibrations.frequencies(noisy, atoms=atoms),
        vibrations.frequencies(h, atoms=atoms),
        rtol=1e-8,
    )
    assert vibrations.count_imaginary(noisy, atoms=atoms) == 0


def test_saddle_point_has_one_imaginary_mode(bent):
    atoms, h = bent
    m = atoms.get_masses()
    modes = vibrations.normal_modes(h, atoms.positions, m)
    # flip the curvature of the softest mode: a first-order saddle point
    e = modes.mass_weighted_modes[0]
    sqrt_m = np.sqrt(np.repeat(m, 3))
    lam = modes.eigenvalues[0]
    saddle = h - 2 * lam * np.outer(sqrt_m * e, sqrt_m * e)
    freqs = vibrations.frequencies(saddle, atoms=atoms)
    assert vibrations.count_imaginary(saddle, atoms=atoms) == 1
    assert freqs[0] == pytest.approx(-modes.frequencies[0], rel=1e-8)
    # a mode weaker than the threshold is treated as noise
    weak = h - (lam + 1e-4) * np.outer(sqrt_m * e, sqrt_m * e)
    assert vibrations.count_imaginary(weak, atoms=atoms, threshold=20.0) == 0


def test_modes_are_orthonormal_and_vibrational(bent):
    atoms, h = bent
    m = atoms.get_masses()
    modes = vibrations.normal_modes(h, atoms.positions, m)
    e = modes.mass_weighted_modes
    np.testing.assert_allclose(e @ e.T, np.eye(len(e)), atol=1e-12)
    basis = vibrations.rigid_body_basis(atoms.positions, m)
    np.testing.assert_allclose(e @ basis, 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(modes.cartesian_modes, axis=1), 1)


def test_wrong_shape_is_rejected(bent):
    atoms, h = bent
    with pytest.raises(ValueError, match=r"\(3N, 3N\)"):
        vibrations.frequencies(h[:-1, :-1], atoms=atoms)
