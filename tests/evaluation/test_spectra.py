"""Spectral comparison on constructed Hessians with a known negative mode."""

import numpy as np
import pytest
from ase import units
from ase.build import molecule

from schnetpack_hessian.data.record import record_from_atoms
from schnetpack_hessian.evaluation.predict import Prediction
from schnetpack_hessian.evaluation.spectra import (
    compare_hessians,
    expected_imaginary,
    zero_point_energy,
)
from schnetpack_hessian.evaluation.structures import pool, structure_row
from schnetpack_hessian.vibrations import EV_A2_AMU_TO_CM1, rigid_body_basis


@pytest.fixture()
def water():
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(0).normal(scale=0.02, size=(3, 3))
    return atoms


def internal_basis(atoms) -> np.ndarray:
    """``(9, 3)`` orthonormal mass-weighted internal directions of the molecule."""
    rigid = rigid_body_basis(atoms.positions, atoms.get_masses())
    q, _ = np.linalg.qr(np.hstack([rigid, np.eye(9)]))
    return q[:, rigid.shape[1] : rigid.shape[1] + 3]


def cartesian(atoms, modes: np.ndarray, eigenvalues) -> np.ndarray:
    """Cartesian Hessian (eV/Å²) with the given mass-weighted modes/eigenvalues."""
    hw = modes @ np.diag(eigenvalues) @ modes.T
    sqrt_m = np.sqrt(np.repeat(atoms.get_masses(), 3))
    return hw * sqrt_m[:, None] * sqrt_m[None, :]


def test_identical_hessians_with_one_negative_mode(water):
    q = internal_basis(water)
    lam = np.array([-0.5, 1.0, 2.0])  # eV/(Å² amu)
    h = cartesian(water, q, lam)
    comp = compare_hessians(h, h, water.positions, water.get_masses())
    assert comp.n_imaginary_ref == comp.n_imaginary_model == 1
    expected = np.sign(lam) * np.sqrt(np.abs(lam)) * EV_A2_AMU_TO_CM1
    np.testing.assert_allclose(comp.frequencies_ref, expected, rtol=1e-10)
    assert comp.frequency_mae == pytest.approx(0.0, abs=1e-9)
    assert comp.lowest_mode_cosine_mw == pytest.approx(1.0, abs=1e-12)
    assert comp.lowest_mode_cosine == pytest.approx(1.0, abs=1e-12)
    assert comp.zpe_ref == pytest.approx(0.5 * expected[1:].sum() * units.invcm)


def test_rotated_ts_mode_gives_its_cosine(water):
    q = internal_basis(water)
    theta = np.deg2rad(30.0)
    rot = q.copy()
    rot[:, 0] = np.cos(theta) * q[:, 0] + np.sin(theta) * q[:, 1]
    rot[:, 1] = -np.sin(theta) * q[:, 0] + np.cos(theta) * q[:, 1]
    lam = [-0.5, 1.0, 2.0]
    comp = compare_hessians(
        cartesian(water, q, lam),
        cartesian(water, rot, lam),
        water.positions,
        water.get_masses(),
    )
    assert comp.lowest_mode_cosine_mw == pytest.approx(np.cos(theta), abs=1e-10)
    assert comp.n_imaginary_model == 1
    # same eigenvalues: frequencies agree by order, but not mode by mode
    assert comp.frequency_mae == pytest.approx(0.0, abs=1e-8)


def test_imaginary_count_is_judged_against_the_kind(water):
    q = internal_basis(water)
    h_ts = cartesian(water, q, [-0.5, 1.0, 2.0])
    h_min = cartesian(water, q, [0.3, 1.0, 2.0])
    water.info.update(kind="ts", reaction=0, hessian=h_ts)
    pred = Prediction(energy=0.0, forces=np.zeros((3, 3)), hessian=h_min)
    from ase.calculators.singlepoint import SinglePointCalculator

    water.calc = SinglePointCalculator(water, energy=0.1, forces=np.zeros((3, 3)))
    comp = compare_hessians(h_ts, h_min, water.positions, water.get_masses())
    row = structure_row(0, record_from_atoms(water), pred, comp)
    assert row["n_imaginary_ref"] == 1 and row["n_imaginary_model"] == 0
    assert row["n_imaginary_expected"] == 1
    assert row["imaginary_count_correct"] == 0
    assert row["energy_error"] == pytest.approx(-0.1)
    stats = pool([row])
    assert stats["imaginary_count_accuracy"] == 0.0
    assert stats["frequency_mae"] > 100.0
    assert stats["zpe_mae"] == pytest.approx(abs(row["zpe_error"]))


def test_expected_imaginary_and_zpe():
    assert expected_imaginary("reactant") == 0
    assert expected_imaginary("ts") == 1
    assert expected_imaginary("irc") is None
    assert zero_point_energy(np.array([-500.0, 1000.0, 2000.0])) == pytest.approx(
        1500.0 * units.invcm
    )


def test_a_float32_model_hessian_is_diagonalised_in_float64(water):
    """The eigen-solves run in float64 even when the model runs in float32 (they ran
    in the Hessians' own precision: float32 eigenvalues, off by ~1e-7)."""
    import torch

    from schnetpack_hessian import Hessian, properties
    from schnetpack_hessian.layout import blocks_to_square
    from schnetpack_hessian.testing import build_batch, make_potential

    model = make_potential("painn", [Hessian()], dtype=torch.float32).eval()
    blocks = model(build_batch([water], dtype=torch.float32))[properties.hessian]
    h32 = blocks_to_square(blocks.detach()).numpy()
    assert h32.dtype == np.float32
    h64 = h32.astype(np.float64)
    comp = compare_hessians(h64, h32, water.positions, water.get_masses())
    assert comp.eigenvalues_model.dtype == np.float64
    exact = np.linalg.eigvalsh(0.5 * (h64 + h64.T))
    np.testing.assert_allclose(comp.eigenvalues_model, exact, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(comp.eigenvalues_model, comp.eigenvalues_ref)
    assert comp.frequency_mae == 0.0 and comp.eigenvalue_mae == 0.0
