"""HessianCalculator: ASE Hessians in eV/Å² for vibrations and TS searches."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.vibrations import VibrationsData

import schnetpack as spk
import schnetpack.transform as trn

from schnetpack_hessian import Hessian
from schnetpack_hessian.calculator import HessianCalculator, enable_full_hessian
from schnetpack_hessian.hessian import was_computed
from schnetpack_hessian.testing import make_potential


@pytest.fixture(params=["forces", "hvp"])
def model_file(request, tmp_path):
    """A saved PaiNN trained with spk Forces, or with an HVP-mode Hessian."""
    outputs = (
        [spk.atomistic.Forces()]
        if request.param == "forces"
        else [Hessian(mode="hvp", probes=dict(kind="rows", n=2))]
    )
    path = tmp_path / "model.pt"
    torch.save(make_potential("painn", outputs, smooth=True, epsilon=1e-4), path)
    return path


def finite_difference(calc, atoms, step=1e-4):
    """(3N, 3N) Hessian from central differences of the calculator's forces."""
    n = len(atoms)
    h = np.zeros((3 * n, 3 * n))
    for a in range(n):
        for c in range(3):
            forces = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, c] += sign * step
                moved.calc = calc
                forces.append(moved.get_forces().reshape(-1))
            h[3 * a + c] = -(forces[0] - forces[1]) / (2 * step)
    return 0.5 * (h + h.T)


def test_hessian_in_ev_per_square_angstrom_matches_finite_differences(model_file):
    calc = HessianCalculator(
        str(model_file),
        trn.MatScipyNeighborList(cutoff=5.0),
        energy_unit="kcal/mol",
        dtype=torch.float64,
    )
    atoms = molecule("CH3OH")
    atoms.positions += np.random.default_rng(0).normal(scale=0.02, size=(6, 3))
    atoms.calc = calc
    hessian = calc.get_hessian(atoms)
    assert hessian.shape == (18, 18)
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-10)
    reference = finite_difference(calc, atoms)
    assert np.abs(hessian - reference).max() < 1e-5 * np.abs(reference).max()
    # kcal/mol model units became eV: forces and Hessian consistently
    assert np.isclose(calc.energy_conversion, 0.0433641, rtol=1e-4)
    vib = VibrationsData.from_2d(atoms, hessian)
    assert len(vib.get_frequencies()) == 18


def test_enable_full_hessian_needs_a_derivative_module():
    model = make_potential("schnet", [])
    with pytest.raises(ValueError, match="neither"):
        enable_full_hessian(model)


def test_forces_alone_do_not_pay_for_the_hessian(model_file):
    calc = HessianCalculator(
        str(model_file), trn.MatScipyNeighborList(cutoff=5.0), dtype=torch.float64
    )
    atoms = molecule("H2O")
    atoms.calc = calc
    forces = atoms.get_forces()
    assert not was_computed(calc.model_results, "hessian")
    hessian = calc.get_hessian(atoms)
    assert hessian.shape == (9, 9)
    np.testing.assert_allclose(atoms.get_forces(), forces, rtol=0, atol=1e-12)


def _calculator(path):
    return HessianCalculator(str(path), trn.ASENeighborList(cutoff=5.0))


def test_data_file_instead_of_a_model_is_one_sentence(tmp_path):
    from ase.calculators.calculator import CalculatorError

    from schnetpack_hessian.data import iread, write
    from schnetpack_hessian.datasets import reactive_set_path

    shipped = reactive_set_path()
    db = tmp_path / "data.db"
    write(db, [next(iter(iread(shipped)))])
    for path in (shipped, db):
        with pytest.raises(CalculatorError) as err:
            _calculator(path)
        message = str(err.value)
        assert message.startswith(f"{path}: is a data file (format ")
        assert "), not a model; " in message
        assert "needs a saved SchNetPack model" in message and "\n" not in message


def test_state_dict_instead_of_a_model_is_one_sentence(model_file):
    from ase.calculators.calculator import CalculatorError

    weights = model_file.with_name("weights.pt")
    torch.save(torch.load(model_file, weights_only=False).state_dict(), weights)
    with pytest.raises(CalculatorError, match="holds a state_dict") as err:
        _calculator(weights)
    assert str(err.value).startswith(f"{weights}: holds a state_dict (parameters")
    with pytest.raises(CalculatorError, match="no such model file"):
        _calculator(model_file.with_name("missing.pt"))
    with pytest.raises(CalculatorError, match="is a directory, not a model file"):
        _calculator(model_file.parent)


def test_a_loaded_model_is_shared_and_its_switch_restored(model_file):
    """A model object is used as it is (evaluation builds its calculator from the
    model it has loaded, not from a second load of the file), and a forces-only call
    leaves the Hessian switch as it found it (it was set to on)."""
    model = torch.load(model_file, weights_only=False)
    calc = HessianCalculator(
        model, trn.MatScipyNeighborList(cutoff=5.0), dtype=torch.float64
    )
    assert calc.model is model
    hessian_module = next(m for m in model.modules() if isinstance(m, Hessian))
    hessian_module.active = False
    atoms = molecule("H2O")
    atoms.calc = calc
    atoms.get_forces()
    assert hessian_module.active is False
    from_file = HessianCalculator(
        str(model_file), trn.MatScipyNeighborList(cutoff=5.0), dtype=torch.float64
    )
    hessian_module.active = True
    np.testing.assert_allclose(calc.get_hessian(atoms), from_file.get_hessian(atoms))
