"""Harmonic vibrational analysis of Cartesian Hessians.

Mass weighting, projection of the rigid-body (translation/rotation) subspace, normal
modes, harmonic frequencies and the count of imaginary modes that decides whether a
structure is a minimum (0) or a first-order saddle point (1).  The generator, the
evaluation code and the tests all use these functions.

Units follow ASE: positions in Å, masses in amu, Hessians in eV/Å², so mass-weighted
eigenvalues are in eV/(Å²·amu) and frequencies in cm⁻¹ (imaginary ones negative).
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np
from ase import Atoms, units

__all__ = [
    "EV_A2_AMU_TO_CM1",
    "NormalModes",
    "rigid_body_basis",
    "mass_weighted_hessian",
    "normal_modes",
    "frequencies",
    "count_imaginary",
]

#: sqrt(λ) with λ in eV/(Å²·amu) → wavenumber in cm⁻¹ (≈ 521.47).
EV_A2_AMU_TO_CM1: float = float(
    np.sqrt(units._e / units._amu) * 1e10 / (2.0 * np.pi * units._c * 100.0)
)


@dataclass(frozen=True)
class NormalModes:
    """Vibrational normal modes of one structure (rigid-body modes removed).

    Attributes:
        eigenvalues: ``(M,)`` eigenvalues of the projected mass-weighted Hessian in
            eV/(Å²·amu), ascending; ``M = 3N − 6`` (``3N − 5`` for linear structures).
        frequencies: ``(M,)`` harmonic wavenumbers in cm⁻¹; imaginary modes negative.
        mass_weighted_modes: ``(M, 3N)`` orthonormal eigenvectors in mass-weighted
            coordinates.
        cartesian_modes: ``(M, 3N)`` Cartesian displacement directions ``M^{-1/2} e``,
            normalised to unit length.
        reduced_masses: ``(M,)`` reduced masses in amu.
        force_constants: ``(M,)`` Cartesian force constants ``λ·μ`` in eV/Å²
            (negative for imaginary modes).
    """

    eigenvalues: np.ndarray
    frequencies: np.ndarray
    mass_weighted_modes: np.ndarray
    cartesian_modes: np.ndarray
    reduced_masses: np.ndarray
    force_constants: np.ndarray


def _as_square(hessian: np.ndarray, n_atoms: int) -> np.ndarray:
    h = np.asarray(hessian, dtype=np.float64)
    if h.shape != (3 * n_atoms, 3 * n_atoms):
        raise ValueError(
            f"expected a (3N, 3N) = ({3 * n_atoms}, {3 * n_atoms}) Hessian for "
            f"{n_atoms} atoms, got {h.shape}"
        )
    return h


def rigid_body_basis(
    positions: np.ndarray, masses: np.ndarray, rtol: float = 1e-3
) -> np.ndarray:
    """Orthonormal basis of infinitesimal translations and rotations.

    The vectors live in mass-weighted coordinates ``q = M^{1/2} x``.  Rotations are
    taken about the centre of mass; vectors whose norm is below ``rtol`` times the
    largest one (the rotation about the axis of a linear structure) are dropped, so
    the basis has 6 columns in general, 5 for linear structures and 3 for one atom.

    Args:
        positions: ``(N, 3)`` Cartesian positions in Å.
        masses: ``(N,)`` atomic masses in amu.
        rtol: relative singular-value cutoff for the rank decision.

    Returns:
        ``(3N, k)`` matrix with orthonormal columns, ``k ∈ {3, 5, 6}``.
    """
    x = np.asarray(positions, dtype=np.float64)
    m = np.asarray(masses, dtype=np.float64)
    n = len(m)
    sqrt_m = np.sqrt(m)
    com = (m[:, None] * x).sum(0) / m.sum()
    r = x - com
    vectors = []
    for axis in range(3):
        t = np.zeros((n, 3))
        t[:, axis] = sqrt_m
        vectors.append(t.ravel())
    for axis in np.eye(3):
        vectors.append((np.cross(axis, r) * sqrt_m[:, None]).ravel())
    b = np.array(vectors).T
    u, s, _ = np.linalg.svd(b, full_matrices=False)
    return u[:, s > rtol * s.max()]


def mass_weighted_hessian(hessian: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """``M^{-1/2} H M^{-1/2}``.

    Args:
        hessian: ``(3N, 3N)`` Cartesian Hessian in eV/Å².
        masses: ``(N,)`` masses in amu.

    Returns:
        ``(3N, 3N)`` mass-weighted Hessian in eV/(Å²·amu).
    """
    m = np.asarray(masses, dtype=np.float64)
    h = _as_square(hessian, len(m))
    inv_sqrt = 1.0 / np.sqrt(np.repeat(m, 3))
    return h * inv_sqrt[:, None] * inv_sqrt[None, :]


def normal_modes(
    hessian: np.ndarray, positions: np.ndarray, masses: np.ndarray
) -> NormalModes:
    """Normal modes after projecting out translations and rotations.

    The symmetrised mass-weighted Hessian is diagonalised in the orthogonal
    complement of :func:`rigid_body_basis`, so the rigid-body modes are removed
    exactly rather than by a frequency cutoff.  Valid at stationary and
    non-stationary points alike (at the latter the rotational projection is the
    usual approximation).

    Args:
        hessian: ``(3N, 3N)`` Cartesian Hessian in eV/Å².
        positions: ``(N, 3)`` positions in Å.
        masses: ``(N,)`` masses in amu.

    Returns:
        The :class:`NormalModes`.
    """
    m = np.asarray(masses, dtype=np.float64)
    hw = mass_weighted_hessian(hessian, m)
    hw = 0.5 * (hw + hw.T)
    rigid = rigid_body_basis(positions, m)
    # orthonormal complement of the rigid-body space
    q, _ = np.linalg.qr(np.hstack([rigid, np.eye(hw.shape[0])]))
    internal = q[:, rigid.shape[1] :]
    evals, evecs = np.linalg.eigh(internal.T @ hw @ internal)
    modes = (internal @ evecs).T
    freqs = np.sign(evals) * np.sqrt(np.abs(evals)) * EV_A2_AMU_TO_CM1
    cart = modes / np.sqrt(np.repeat(m, 3))[None, :]
    norms = np.linalg.norm(cart, axis=1)
    reduced = 1.0 / norms**2
    return NormalModes(
        eigenvalues=evals,
        frequencies=freqs,
        mass_weighted_modes=modes,
        cartesian_modes=cart / norms[:, None],
        reduced_masses=reduced,
        force_constants=evals * reduced,
    )


def frequencies(
    hessian: np.ndarray,
    positions: Optional[np.ndarray] = None,
    masses: Optional[np.ndarray] = None,
    atoms: Optional[Atoms] = None,
) -> np.ndarray:
    """Harmonic wavenumbers in cm⁻¹ (imaginary negative), rigid-body modes removed.

    Args:
        hessian: ``(3N, 3N)`` Cartesian Hessian in eV/Å².
        positions: ``(N, 3)`` positions in Å (or give ``atoms``).
        masses: ``(N,)`` masses in amu (or give ``atoms``).
        atoms: structure supplying positions and masses.

    Returns:
        ``(3N − 6,)`` (``3N − 5`` if linear) ascending wavenumbers in cm⁻¹.
    """
    if atoms is not None:
        positions, masses = atoms.get_positions(), atoms.get_masses()
    if positions is None or masses is None:
        raise ValueError("frequencies needs either atoms or positions and masses")
    return normal_modes(hessian, positions, masses).frequencies


def count_imaginary(
    hessian: np.ndarray,
    positions: Optional[np.ndarray] = None,
    masses: Optional[np.ndarray] = None,
    atoms: Optional[Atoms] = None,
    threshold: float = 20.0,
) -> int:
    """Number of imaginary vibrational modes with ``|ν| > threshold`` cm⁻¹.

    A minimum has 0, a first-order saddle point (transition state) exactly 1.
    The threshold absorbs numerical noise (integration grids, loose convergence)
    in near-zero modes.

    Args:
        hessian: ``(3N, 3N)`` Cartesian Hessian in eV/Å².
        positions: ``(N, 3)`` positions in Å (or give ``atoms``).
        masses: ``(N,)`` masses in amu (or give ``atoms``).
        atoms: structure supplying positions and masses.
        threshold: magnitude in cm⁻¹ below which an imaginary mode is ignored.

    Returns:
        The count of imaginary modes.
    """
    freqs = frequencies(hessian, positions, masses, atoms)
    return int(np.sum(freqs < -abs(threshold)))
