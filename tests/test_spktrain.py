"""spktrain finds the plugin's experiments and trains E+F+H end to end (integration)."""

import csv
import json
import math

import pytest
import torch

from schnetpack_hessian.data import write
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian import Hessian, properties
from schnetpack_hessian.hessian import was_computed
from schnetpack_hessian.testing import build_batch, reference_molecules
from schnetpack_hessian.testing import run_spktrain as spktrain

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def training_file(tmp_path_factory):
    """Small labelled data set: 6 reactions with every kind, some without Hessians."""
    path = tmp_path_factory.mktemp("data") / "reactive.h5"
    write(path, make_atoms(n_structures=36, seed=3, n_reactions=6, sizes=(3, 4)))
    return path


@pytest.mark.parametrize(
    "experiment,mode",
    [("hessian_demo", "hvp"), ("reactive_efh", "full"), ("reactive_ef", "full")],
)
def test_spktrain_experiment_trains_tests_and_reports(
    experiment, mode, training_file, tmp_path
):
    result = spktrain(
        [
            f"experiment={experiment}",
            f"data.datapath={training_file}",
            f"globals.hessian_mode={mode}",
            "trainer.max_epochs=2",
            "model.representation.n_atom_basis=16",
            "model.representation.n_interactions=1",
            "logger=csv",
            "globals.atomrefs=False",  # the test file has no single-atom references
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    report = json.loads((runs[0] / "extrapolation_report.json").read_text())
    for split in ("test", "irc", "nms"):
        errors = report["errors"][split]
        assert errors["n_structures"] > 0
        assert errors["hessian_mae"] > 0 and errors["forces_rmse"] > 0
    assert report["units"]["hessian"] == "kcal/mol/Ang/Ang"
    assert (runs[0] / "best_model").exists()
    assert "Errors on held-out geometries" in result.stdout
    # a finite validation loss is logged every epoch (that training lowers the loss
    # is shown deterministically in test_losses.py: two epochs of a few steps on
    # this data move it by less than its noise)
    (metrics,) = runs[0].glob("csv/**/metrics.csv")
    with open(metrics) as f:
        val = [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]
    assert len(val) == 2 and all(math.isfinite(v) and v > 0 for v in val)
    # only E+F+H computes second derivatives in training, every model in evaluation
    model = torch.load(runs[0] / "best_model", weights_only=False)
    module = next(m for m in model.modules() if isinstance(m, Hessian))
    trained_on = "none" if experiment == "reactive_ef" else mode
    assert module.schedule.training == trained_on
    assert module.schedule.evaluation == "full"
    out = model.train()(build_batch(reference_molecules(), dtype=torch.float32))
    key = properties.hessian if mode == "full" else properties.hessian_hvp
    assert was_computed(out, key) == (trained_on != "none")
    assert out[properties.hessian].requires_grad == (trained_on == "full")


def test_spktrain_ddp_on_two_cpu_processes(training_file, tmp_path):
    common = [
        "experiment=reactive_efh",
        f"data.datapath={training_file}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "model.representation.n_atom_basis=16",
        "model.representation.n_interactions=1",
        "logger=csv",
        "globals.atomrefs=False",
        "run.id=ddp",
    ]
    # (that plain trainer=ddp_trainer is refused: tests/study/test_presets.py)
    result = spktrain(common + ["trainer=ddp_hessian"], cwd=tmp_path / "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "runs" / "ddp" / "extrapolation_report.json").exists()


def test_spktrain_refuses_coincident_atoms_instead_of_training_on_nan(
    training_file, tmp_path
):
    import shutil

    import h5py

    bad = tmp_path / "bad.h5"
    shutil.copy(training_file, bad)
    with h5py.File(bad, "a") as f:
        start = int(f["n_atoms"][:6].sum())  # structure 6: a reactant, so trained on
        f["positions"][start + 1] = f["positions"][start]
    result = spktrain(
        [
            "experiment=hessian_demo",
            f"data.datapath={bad}",
            "trainer.max_epochs=1",
            "model.representation.n_atom_basis=8",
            "model.representation.n_interactions=1",
            "globals.atomrefs=False",
        ],
        cwd=tmp_path / "run",
    )
    assert result.returncode != 0
    assert "bad.h5, structure 6: atoms 0 and 1 are 0 Ang apart" in result.stderr
