"""A model Hessian against a reference Hessian: eigenvalues, lowest mode, frequencies.

All Hessians are Cartesian ``(3N, 3N)`` in eV/Å² at the same geometry (Å, amu); the
vibrational quantities reuse :mod:`schnetpack_hessian.vibrations` (mass weighting and
exact projection of translations and rotations).  Every eigen-decomposition runs in
float64, whatever the precision of the model or the stored reference (a float32
model's Hessian, HORM's float32 Hessians): the Hessians are converted first.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np
from ase import units
from scipy.optimize import linear_sum_assignment

from schnetpack_hessian.vibrations import NormalModes, normal_modes

__all__ = [
    "HessianComparison",
    "compare_hessians",
    "expected_imaginary",
    "zero_point_energy",
    "IMAG_THRESHOLD",
]

#: |ν| in cm⁻¹ below which an imaginary mode counts as numerical noise.
IMAG_THRESHOLD: float = 20.0


def expected_imaginary(kind: str) -> Optional[int]:
    """Imaginary modes a critical point must have: 0 for minima, 1 for a TS."""
    return {"reactant": 0, "product": 0, "ts": 1}.get(kind)


def zero_point_energy(frequencies: np.ndarray) -> float:
    """Harmonic zero-point energy ``½ Σ h c ν̃`` over the real modes, in eV."""
    nu = np.asarray(frequencies, dtype=np.float64)
    return float(0.5 * nu[nu > 0].sum() * units.invcm)


@dataclass(frozen=True)
class HessianComparison:
    """How a model Hessian compares with the reference at one geometry.

    Attributes:
        eigenvalues_ref: ``(3N,)`` ascending Cartesian eigenvalues, eV/Å².
        eigenvalues_model: ``(3N,)`` the model's.
        eigenvalue_mae: mean |Δλ| over the sorted eigenvalues, eV/Å².
        lowest_mode_cosine: |cos| between the lowest internal eigenvectors of the
            Cartesian Hessians (translations and rotations projected out).
        lowest_mode_cosine_mw: the same for the mass-weighted Hessians (the TS mode
            at a transition state).
        frequencies_ref: ``(3N − 6,)`` ascending harmonic wavenumbers, cm⁻¹
            (imaginary negative).
        frequencies_model: the model's.
        frequency_mae: mean |Δν̃| over modes matched by order, cm⁻¹.
        frequency_mae_matched: mean |Δν̃| over modes matched by maximal overlap of the
            mass-weighted eigenvectors (Hungarian assignment), cm⁻¹.
        n_imaginary_ref: imaginary modes of the reference (|ν̃| > threshold).
        n_imaginary_model: the model's.
        zpe_ref: harmonic zero-point energy of the reference, eV.
        zpe_model: the model's.
    """

    eigenvalues_ref: np.ndarray
    eigenvalues_model: np.ndarray
    eigenvalue_mae: float
    lowest_mode_cosine: float
    lowest_mode_cosine_mw: float
    frequencies_ref: np.ndarray
    frequencies_model: np.ndarray
    frequency_mae: float
    frequency_mae_matched: float
    n_imaginary_ref: int
    n_imaginary_model: int
    zpe_ref: float
    zpe_model: float


def _lowest_cosine(a: NormalModes, b: NormalModes) -> float:
    if not len(a.eigenvalues):
        return float("nan")
    return float(abs(a.mass_weighted_modes[0] @ b.mass_weighted_modes[0]))


def _matched_mae(a: NormalModes, b: NormalModes) -> float:
    if not len(a.frequencies):
        return float("nan")
    overlap = (a.mass_weighted_modes @ b.mass_weighted_modes.T) ** 2
    rows, cols = linear_sum_assignment(-overlap)
    return float(np.mean(np.abs(a.frequencies[rows] - b.frequencies[cols])))


def _symmetric64(hessian: np.ndarray) -> np.ndarray:
    """``(H + Hᵀ) / 2`` of a ``(3N, 3N)`` Hessian, in float64."""
    h = np.asarray(hessian, dtype=np.float64)
    return 0.5 * (h + h.T)


def compare_hessians(
    hessian_ref: np.ndarray,
    hessian_model: np.ndarray,
    positions: np.ndarray,
    masses: np.ndarray,
    imag_threshold: float = IMAG_THRESHOLD,
) -> HessianComparison:
    """Spectral comparison of two Cartesian Hessians at one geometry, in float64.

    Args:
        hessian_ref: ``(3N, 3N)`` reference Hessian, eV/Å².
        hessian_model: ``(3N, 3N)`` model Hessian, eV/Å².
        positions: ``(N, 3)`` in Å.
        masses: ``(N,)`` in amu.
        imag_threshold: cm⁻¹ below which an imaginary mode is not counted.
    """
    h_ref = _symmetric64(hessian_ref)
    h_mod = _symmetric64(hessian_model)
    ev_ref = np.linalg.eigvalsh(h_ref)
    ev_mod = np.linalg.eigvalsh(h_mod)
    unit = np.ones(len(masses))
    cart_ref = normal_modes(h_ref, positions, unit)
    cart_mod = normal_modes(h_mod, positions, unit)
    mw_ref = normal_modes(h_ref, positions, masses)
    mw_mod = normal_modes(h_mod, positions, masses)
    f_ref, f_mod = mw_ref.frequencies, mw_mod.frequencies
    return HessianComparison(
        eigenvalues_ref=ev_ref,
        eigenvalues_model=ev_mod,
        eigenvalue_mae=float(np.mean(np.abs(ev_ref - ev_mod))),
        lowest_mode_cosine=_lowest_cosine(cart_ref, cart_mod),
        lowest_mode_cosine_mw=_lowest_cosine(mw_ref, mw_mod),
        frequencies_ref=f_ref,
        frequencies_model=f_mod,
        frequency_mae=(
            float(np.mean(np.abs(f_ref - f_mod))) if len(f_ref) else float("nan")
        ),
        frequency_mae_matched=_matched_mae(mw_ref, mw_mod),
        n_imaginary_ref=int(np.sum(f_ref < -abs(imag_threshold))),
        n_imaginary_model=int(np.sum(f_mod < -abs(imag_threshold))),
        zpe_ref=zero_point_energy(f_ref),
        zpe_model=zero_point_energy(f_mod),
    )
