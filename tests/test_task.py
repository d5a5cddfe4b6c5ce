"""HessianTask: checkpoints reload with weights_only=True (torch >= 2.6 default)."""

import pickle

import pytest
import torch

import schnetpack as spk

from schnetpack_hessian import Hessian, HessianOutput, HessianTask
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
