"""evaluate() and the ExtrapolationReport callback, checked against direct sums."""

import json
import types

import numpy as np
import pytest
import torch

import schnetpack.transform as trn

from schnetpack_hessian import Hessian, properties
from schnetpack_hessian.callbacks import ExtrapolationReport
from schnetpack_hessian.data import HessianDataModule, write
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian.evaluation import evaluate
from schnetpack_hessian.layout import blocks_to_square
from schnetpack_hessian.testing import make_potential


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    """24 structures of 2-5 atoms (every 4th without Hessian), critical split."""
    path = tmp_path_factory.mktemp("errors") / "data.h5"
    write(path, make_atoms(24, seed=2, n_reactions=4))
    dm = HessianDataModule(
        str(path),
        batch_size=5,
        num_workers=0,
        split_file=None,
        splitting="critical",
        num_train=0.6,
        num_val=0.2,
        extrapolation_kinds=["irc", "nms"],
        distance_unit="Ang",
        property_units={"energy": "eV", "forces": "eV/Ang", "hessian": "eV/Ang/Ang"},
        transforms=[trn.MatScipyNeighborList(cutoff=5.0), trn.CastTo64()],
    )
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def model():
    return make_potential("schnet", [Hessian(mode="full")]).eval()


def direct_errors(model, loader):
    """Sums over every entry, written out per structure."""
    e, f, h = [], [], []
    for batch in loader:
        with torch.enable_grad():
            pred = model({k: v.clone() for k, v in batch.items()})
        e.append((pred["energy"] - batch["energy"]).detach().numpy())
        f.append((pred["forces"] - batch["forces"]).detach().numpy().ravel())
        sizes = (batch["_n_atoms"] ** 2).tolist()
        for p, t in zip(
            torch.split(pred[properties.hessian].detach(), sizes),
            torch.split(batch[properties.hessian], sizes),
        ):
            if not torch.isnan(t).all():
                h.append((blocks_to_square(p) - blocks_to_square(t)).numpy().ravel())
    e, f, h = (np.concatenate(x) for x in (e, f, h))
    return {
        "energy_mae": np.abs(e).mean(),
        "energy_rmse": np.sqrt((e**2).mean()),
        "forces_mae": np.abs(f).mean(),
        "hessian_mae": np.abs(h).mean(),
        "hessian_rmse": np.sqrt((h**2).mean()),
    }


def test_evaluate_pools_every_entry_and_skips_missing_hessians(model, datamodule):
    loader = datamodule.extrapolation_dataloader("nms")
    result = evaluate(model, loader)
    expected = direct_errors(model, loader)
    assert result["n_structures"] == len(datamodule.extrapolation_idx["nms"])
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-10), key
    assert model.training is False


def test_evaluate_without_hessian_output_reports_energy_and_forces(datamodule):
    plain = make_potential(
        "schnet", [Hessian(mode="full", schedule={"evaluation": "none"})]
    )
    result = evaluate(plain.eval(), datamodule.test_dataloader())
    assert "hessian_mae" not in result and result["forces_mae"] > 0


def test_extrapolation_report_writes_what_evaluate_measures(
    model, datamodule, tmp_path, capsys
):
    report = ExtrapolationReport(
        path=str(tmp_path / "report.json"), units={"energy": "eV"}
    )
    trainer = types.SimpleNamespace(global_rank=0, datamodule=datamodule)
    report.on_test_end(trainer, types.SimpleNamespace(model=model))
    written = json.loads((tmp_path / "report.json").read_text())
    assert set(written["errors"]) == {"test", "irc", "nms"}
    irc = evaluate(model, datamodule.extrapolation_dataloader("irc"))
    assert written["errors"]["irc"] == pytest.approx(irc, rel=1e-12)
    table = capsys.readouterr().out
    assert "Errors on held-out geometries" in table and "units: energy eV" in table
    assert f"irc      {irc['n_structures']:5d}" in table


def test_extrapolation_report_is_silent_off_rank_zero(model, datamodule, tmp_path):
    report = ExtrapolationReport(path=str(tmp_path / "r.json"))
    trainer = types.SimpleNamespace(global_rank=1, datamodule=datamodule)
    report.on_test_end(trainer, types.SimpleNamespace(model=model))
    assert not (tmp_path / "r.json").exists()
