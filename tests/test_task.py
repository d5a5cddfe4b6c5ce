"""HessianTask: checkpoints reload with weights_only=True (torch >= 2.6 default)."""

import pickle

import pytest
import torch

import schnetpack as spk

from schnetpack_hessian import Hessian, HessianOutput, HessianTask, NonFiniteLossError
from schnetpack_hessian.testing import make_potential


def make_task():
    model = make_potential("painn", [Hessian(mode="hvp", probe="rows", n_probes=2)])
    outputs = [
        spk.task.ModelOutput("energy", loss_fn=torch.nn.MSELoss(), metrics={}),
        HessianOutput(loss_weight=0.1),
    ]
    return HessianTask(model=model, outputs=outputs, optimizer_args={"lr": 1e-3})


def test_hyperparameters_reload_with_weights_only(tmp_path):
    task = make_task()
    path = tmp_path / "hparams.pt"
    torch.save(
        {"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}, path
    )
    loaded = torch.load(path, weights_only=True)
    reloaded_model = loaded["hyper_parameters"]["model"]
    assert isinstance(reloaded_model.output_modules[1], Hessian)
    assert reloaded_model.output_modules[1].probe == "rows"


class NotAllowListed:
    """A class no task refers to: weights-only loading must refuse it."""


def test_foreign_globals_are_still_refused(tmp_path):
    make_task()
    path = tmp_path / "foreign.pt"
    torch.save({"x": NotAllowListed()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def _energy_task():
    model = make_potential("schnet", [])
    outputs = [spk.task.ModelOutput("energy", loss_fn=torch.nn.MSELoss(), metrics={})]
    return HessianTask(model=model, outputs=outputs, optimizer_args={"lr": 1e-3})


def _labelled(batch, energies):
    batch = dict(batch)
    batch["energy"] = torch.tensor(energies, dtype=torch.float64)
    batch["_idx"] = torch.tensor([11, 4, 7, 2])
    return batch


def test_first_non_finite_loss_stops_training_and_names_the_structures(batch):
    task = _energy_task()
    loss = task.training_step(_labelled(batch, [-1.0, -2.0, -3.0, -4.0]), 0)
    assert torch.isfinite(loss)
    poisoned = _labelled(batch, [-1.0, float("nan"), -3.0, -4.0])
    with pytest.raises(
        NonFiniteLossError,
        match=r"training loss is nan at epoch 0, step 0 \(batch 3; terms: energy nan\)"
        r"; the batch holds structures \[11, 4, 7, 2\]",
    ):
        task.training_step(poisoned, 3)


def test_fit_stops_before_the_weights_take_the_nan(batch):
    pl = pytest.importorskip("pytorch_lightning")
    task = _energy_task()
    before = [p.detach().clone() for p in task.parameters()]

    class OneBatch(pl.LightningDataModule):
        datapath = "reactive.h5"

        def train_dataloader(self):
            return torch.utils.data.DataLoader(
                [_labelled(batch, [-1.0, -2.0, float("inf"), -4.0])],
                batch_size=None,
            )

    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    with pytest.raises(
        NonFiniteLossError, match=r"structures \[11, 4, 7, 2\] of reactive.h5"
    ):
        trainer.fit(task, datamodule=OneBatch())
    for a, b in zip(before, task.parameters()):
        assert torch.equal(a, b.detach())
