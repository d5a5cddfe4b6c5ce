"""Evaluation of a real fitted model: batched Hessians, frequencies against ASE's
finite differences, and TS searches with the model's analytic Hessian."""

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.optimize import BFGS
from ase.vibrations import Vibrations

from schnetpack_hessian.data import iread_records
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.evaluation.data import as_records
from schnetpack_hessian.evaluation.downstream import evaluate_downstream
from schnetpack_hessian.evaluation.model import load_model
from schnetpack_hessian.evaluation.predict import predict
from schnetpack_hessian.evaluation.reactions import reaction_paths
from schnetpack_hessian.evaluation.tssearch import (
    TSSearchSettings,
    ts_search,
    ts_starts,
)
from schnetpack_hessian.vibrations import normal_modes


@pytest.fixture(scope="module")
def model(fitted_model_file):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return load_model(fitted_model_file, energy_unit="eV")


@pytest.fixture(scope="module")
def calc(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return model.calculator()


def test_batched_predictions_equal_the_calculator_one_by_one(model, calc):
    """A mixed batch (3-, 4- and 5-atom molecules) gives each molecule's own E, F, H,
    in input order although predict batches them by size."""
    data = list(iread_records(reactive_set_path()))
    mixed = [data[i] for i in (0, 50, 27, 225, 101, 3)]
    sizes = [a.n_atoms for a in mixed]
    assert len(set(sizes)) >= 3 and sizes != sorted(sizes)
    preds = predict(model, mixed, batch_size=4)
    for atoms, pred in zip(mixed, preds):
        a = Atoms(atoms.numbers, atoms.positions)
        a.calc = calc
        np.testing.assert_allclose(pred.energy, a.get_potential_energy(), atol=1e-9)
        np.testing.assert_allclose(pred.forces, a.get_forces(), atol=1e-9)
        np.testing.assert_allclose(pred.hessian, calc.get_hessian(a), atol=1e-9)
        np.testing.assert_allclose(pred.hessian, pred.hessian.T, atol=1e-10)


def test_frequencies_equal_ase_finite_differences(
    model, calc, reaction_structures, tmp_path
):
    reactant = next(a for a in reaction_structures if a.info["kind"] == "reactant")
    atoms = Atoms(reactant.numbers, reactant.positions)
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=1e-5, steps=200)
    (pred,) = predict(
        model, [HessianRecord(atoms.numbers, atoms.positions, None, None)]
    )
    ours = normal_modes(pred.hessian, atoms.positions, atoms.get_masses()).frequencies
    vib = Vibrations(atoms, delta=0.005, nfree=4, name=str(tmp_path / "vib"))
    vib.run()
    data = vib.get_vibrations()
    fd = np.sort(np.real(data.get_frequencies()))[-len(ours) :]
    assert len(ours) == 3 and ours.min() > 100.0  # a bent triatomic minimum
    np.testing.assert_allclose(ours, fd, atol=0.5)
    np.testing.assert_allclose(pred.hessian, data.get_hessian_2d(), atol=2e-3)


def test_ts_search_with_the_model_hessian_converges(calc, reaction_structures):
    paths = reaction_paths(as_records(reaction_structures))
    settings = TSSearchSettings(n_perturbations=2, irc_starts=False)
    starts = ts_starts(as_records(reaction_structures), paths, settings)
    assert [s.label for s in starts] == ["perturbed-0", "perturbed-1"]
    ts = reaction_structures[paths[1].ts]
    displaced = np.sqrt(
        np.mean(np.sum((starts[0].atoms.positions - ts.positions) ** 2, 1))
    )
    assert displaced == pytest.approx(0.1)
    for start in starts:
        result = ts_search(calc, start, "model_hessian", settings)
        assert result.converged and result.n_imaginary == 1, result
        assert result.rmsd < settings.rmsd_threshold and result.success
        assert result.hessian_calls >= 1 and result.force_calls >= result.steps
    baseline = ts_search(calc, starts[0], "sella_updates", settings)
    assert baseline.hessian_calls == 0


def test_ts_search_settings_choose_the_methods():
    assert TSSearchSettings().methods == ("model_hessian", "sella_updates")
    with pytest.raises(ValueError, match="methods"):
        TSSearchSettings(methods=("newton",))
    with pytest.raises(ValueError, match="methods"):
        TSSearchSettings(methods=())


def test_downstream_report_of_a_fitted_model(model, reaction_structures):
    report = evaluate_downstream(
        model,
        reaction_structures,
        reaction_names={1: "HNO -> HON"},
        ts_settings=TSSearchSettings(n_perturbations=1),
    )
    only_model = evaluate_downstream(
        model,
        reaction_structures,
        ts_settings=TSSearchSettings(
            n_perturbations=1, irc_starts=False, methods=("model_hessian",)
        ),
    )
    assert [r.method for r in only_model.ts_results] == ["model_hessian"]
    assert set(only_model.ts_summary) == {"model_hessian"}
    stats = report.pooled["all"]
    assert stats["n_structures"] == 25 and stats["n_hessians"] == 25
    assert stats["energy_mae"] < 0.1 and stats["forces_mae"] < 0.1  # eV, eV/Å
    assert stats["imaginary_count_accuracy"] == 1.0
    assert stats["lowest_mode_cosine_mw"] > 0.9
    assert set(report.pooled["kind"]) == {"reactant", "product", "ts", "irc", "nms"}
    assert report.barriers[0]["name"] == "HNO -> HON"
    assert report.profile_stats["irc_maximum_at_ts_rate"] == 1.0
    assert len(report.ts_results) == 2 * 3  # (1 perturbed + 2 IRC starts) x 2 methods
    assert report.ts_summary["model_hessian"]["success_rate"] == 1.0
