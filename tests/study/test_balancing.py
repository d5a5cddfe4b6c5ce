"""Variance balancing: weights 1 / Var(target) over the training split."""

import numpy as np
import pytest
import schnetpack.transform as trn
import torch
import torchmetrics
from schnetpack.task import ModelOutput

from schnetpack_hessian import Hessian, HessianOutput
from schnetpack_hessian.data import iread, open_dataset
from schnetpack_hessian.study.balancing import VarianceBalancing, target_variances
from schnetpack_hessian.task import HessianTask
from schnetpack_hessian.testing import make_potential, quiet_trainer


def test_target_variances_match_numpy(small_file):
    atoms = list(iread(small_file))  # eV, Å: the file's units
    dataset = open_dataset(small_file)
    got = target_variances(dataset, ["energy", "forces", "hessian"])
    energies = [a.get_potential_energy() for a in atoms]
    forces = np.concatenate([a.get_forces().ravel() for a in atoms])
    hessians = np.concatenate([np.asarray(a.info["hessian"]).ravel() for a in atoms])
    np.testing.assert_allclose(got["energy"], np.var(energies), rtol=1e-9)
    np.testing.assert_allclose(got["forces"], np.var(forces), rtol=1e-9)
    np.testing.assert_allclose(got["hessian"], np.var(hessians), rtol=1e-9)


def test_constant_target_is_refused(small_file):
    dataset = open_dataset(small_file).subset([0])
    with pytest.raises(ValueError, match="variance"):
        target_variances(dataset, ["energy"])


def _output(name, weight):
    return ModelOutput(
        name=name,
        loss_fn=torch.nn.MSELoss(),
        loss_weight=weight,
        metrics={"MAE": torchmetrics.MeanAbsoluteError()},
    )


def test_callback_sets_one_over_variance_and_keeps_zero_weights(
    small_file, small_module, tmp_path
):
    dm = small_module(
        transforms=[
            trn.RemoveOffsets("energy", remove_mean=True),
            trn.MatScipyNeighborList(cutoff=5.0),
            trn.CastTo32(),
        ],
    )
    model = make_potential(
        "painn", [Hessian(mode="full")], n_atom_basis=8, dtype=torch.float32
    )
    task = HessianTask(
        model=model,
        outputs=[
            _output("energy", 1.0),
            _output("forces", 0.0),
            HessianOutput(loss_weight=0.5),
        ],
        optimizer_cls=torch.optim.Adam,
        optimizer_args={"lr": 1e-3},
    )
    callback = VarianceBalancing()
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[callback],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(task, datamodule=dm)
    var = target_variances(dm.train_dataset, ["energy", "hessian"])
    weights = {o.name: o.loss_weight for o in task.outputs}
    assert weights["forces"] == 0.0
    np.testing.assert_allclose(weights["energy"], 1.0 / var["energy"], rtol=1e-12)
    np.testing.assert_allclose(weights["hessian"], 1.0 / var["hessian"], rtol=1e-12)
    assert callback.weights == {
        "energy": weights["energy"],
        "hessian": weights["hessian"],
    }
    # the variance is of what the loss sees: energies after the offset removal
    raw = target_variances(open_dataset(small_file).subset(dm.train_idx), ["energy"])
    assert not np.isclose(var["energy"], raw["energy"], rtol=1e-3)
