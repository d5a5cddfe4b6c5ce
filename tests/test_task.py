"""HessianTask: checkpoints reload with weights_only=True (torch >= 2.6 default)."""

import pickle

import pytest
import torch

import schnetpack as spk

from schnetpack_hessian import Hessian, HessianOutput, HessianTask, NonFiniteLossError
from schnetpack_hessian.testing import make_potential, quiet_trainer, run_as_script


def make_task():
    model = make_potential(
        "painn", [Hessian(mode="hvp", probes=dict(kind="rows", n=2))]
    )
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

    trainer = quiet_trainer(
        max_epochs=1,
    )
    with pytest.raises(
        NonFiniteLossError, match=r"structures \[11, 4, 7, 2\] of reactive.h5"
    ):
        trainer.fit(task, datamodule=OneBatch())
    for a, b in zip(before, task.parameters()):
        assert torch.equal(a, b.detach())


@pytest.mark.integration
def test_hessian_loss_on_data_without_hessians_is_refused(tmp_path):
    """reactive_efh on data without a single Hessian stops before training (it used
    to train E+F, exit 0 and report test_hessian_MAE = nan); the opt-in trains."""
    from schnetpack_hessian.data import write
    from schnetpack_hessian.data.testing import make_atoms
    from schnetpack_hessian.testing import run_spktrain

    data = tmp_path / "no_hessians.h5"
    write(data, make_atoms(n_structures=24, seed=3, missing_every=1, sizes=(3, 4)))
    command = [
        "experiment=reactive_efh",
        f"data.datapath={data}",
        "trainer.max_epochs=1",
        "model.representation.n_atom_basis=8",
        "model.representation.n_interactions=1",
        "globals.atomrefs=False",
        "logger=csv",
    ]
    refused = run_spktrain(command + ["run.id=refused"], tmp_path)
    assert refused.returncode != 0
    assert "the training split holds no Hessian" in refused.stderr
    assert "data.allow_missing_hessians=True" in refused.stderr
    assert not (tmp_path / "runs" / "refused" / "best_model").exists()
    allowed = run_spktrain(
        command + ["run.id=allowed", "data.allow_missing_hessians=True"], tmp_path
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    # each run draws its split in its own directory: runs never share one
    assert (tmp_path / "runs" / "allowed" / "split.npz").exists()
    assert not (tmp_path / "data" / "split.npz").exists()


def _nan_on_rank_one(init_file, batch_file):
    """One DDP rank (spawned by Lightning) trains on a batch with an infinite target."""
    import datetime

    import pytorch_lightning as pl
    from pytorch_lightning.strategies import DDPStrategy

    batch = torch.load(batch_file, weights_only=False)
    task = _energy_task()

    class PerRank(pl.LightningDataModule):
        datapath = "reactive.h5"

        def train_dataloader(self):
            energies = [-1.0, -2.0, -3.0, -4.0]
            if self.trainer.global_rank == 1:
                energies[2] = float("inf")
            return torch.utils.data.DataLoader(
                [_labelled(batch, energies)] * 2, batch_size=None
            )

    trainer = quiet_trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(
            find_unused_parameters=True,
            process_group_backend="gloo",
            timeout=datetime.timedelta(seconds=60),
        ),
        max_epochs=1,
        use_distributed_sampler=False,
    )
    trainer.fit(task, datamodule=PerRank())


@pytest.mark.integration
def test_non_finite_loss_on_one_ddp_rank_stops_every_rank(batch, tmp_path):
    """Both ranks stop at the step where one rank's loss is not finite (the others
    used to wait in the gradient all-reduce until the process-group timeout)."""

    batch_file = tmp_path / "batch.pt"
    torch.save(dict(batch), batch_file)
    done = run_as_script(
        __file__, "_nan_on_rank_one", None, str(batch_file), cwd=tmp_path
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert "NonFiniteLossError" in out, out[-3000:]
    assert "structures [11, 4, 7, 2] of reactive.h5" in out, out[-3000:]
    # rank 0, whose loss was finite, stopped at the same step instead of waiting
    assert "not finite on another rank at epoch 0, step 0" in out, out[-3000:]


def test_checkpoint_of_a_seeded_hvp_model_loads_weights_only(tmp_path, batch):
    """A seeded Hessian module that has drawn probes pickles its generator's state as
    a tensor: the checkpoint loads with weights_only=True (it held a torch.Generator)
    and the probe stream continues where it was."""
    model = make_potential("painn", [Hessian(mode="hvp", probes=dict(n=2, seed=3))])
    outputs = [
        spk.task.ModelOutput("energy", loss_fn=torch.nn.MSELoss(), metrics={}),
        HessianOutput(loss_weight=0.1),
    ]
    task = HessianTask(model=model, outputs=outputs, optimizer_args={"lr": 1e-3})
    hessian = task.model.output_modules[-1]
    task.model.train()(dict(batch))  # draws probes: the generator exists now
    path = tmp_path / "seeded.ckpt"
    torch.save({"hyper_parameters": dict(task.hparams)}, path)
    loaded = torch.load(path, weights_only=True)["hyper_parameters"]["model"]
    again = loaded.output_modules[-1]
    expected = torch.randn(5, generator=hessian._probe_generator(torch.device("cpu")))
    drawn = torch.randn(5, generator=again._probe_generator(torch.device("cpu")))
    torch.testing.assert_close(drawn, expected, rtol=0, atol=0)


def test_the_task_marks_its_hessian_modules_in_this_process_only():
    """HessianTask checks the DDP strategy, so its Hessian modules need not warn
    about it; the mark is not saved with the model (a best_model trained further
    under another task warns again)."""
    hessian = make_task().model.output_modules[-1]
    assert hessian._ddp_checked
    assert not pickle.loads(pickle.dumps(hessian))._ddp_checked
    assert not Hessian()._ddp_checked
