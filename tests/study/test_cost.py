"""The cost record of a training: every epoch counted once, also across a resume."""

import json

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from schnetpack_hessian.study.cost import EpochCost


class _Line(pl.LightningModule):
    """Least squares on a line: the smallest training Lightning can checkpoint."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.w(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _BigValidation(_Line):
    """Validation holds 400 MiB for a moment, as exact Hessians of a large
    validation set do; training stays small."""

    def validation_step(self, batch, _):
        big = torch.ones(400 * 2**20 // 8, dtype=torch.float64)
        self.log("val_loss", big[:1].sum())


def _fit(tmp_path, max_epochs, ckpt_path=None, module=_Line, validate=False):
    x = torch.linspace(0, 1, 8)[:, None]
    data = DataLoader(TensorDataset(x, 2 * x), batch_size=4)
    val = DataLoader(TensorDataset(x, 2 * x), batch_size=8) if validate else None
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=[EpochCost(str(tmp_path / "cost.json")), checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(module(), data, val, ckpt_path=ckpt_path)
    return json.loads((tmp_path / "cost.json").read_text())


def test_a_resumed_training_keeps_the_epochs_it_had_finished(tmp_path):
    first = _fit(tmp_path, max_epochs=3)
    assert len(first["epoch_seconds"]) == 3
    resumed = _fit(tmp_path, max_epochs=5, ckpt_path=str(tmp_path / "last.ckpt"))
    assert len(resumed["epoch_seconds"]) == 5
    assert len(resumed["epoch_cpu_seconds"]) == 5
    assert resumed["epoch_seconds"][:3] == first["epoch_seconds"]


def test_a_fresh_training_starts_a_fresh_record(tmp_path):
    _fit(tmp_path, max_epochs=3)
    again = _fit(tmp_path, max_epochs=2)
    assert len(again["epoch_seconds"]) == 2


def test_training_peak_leaves_validation_out(tmp_path):
    """The whole-process peak includes validation's 400 MiB, the training peak does
    not (it included them: the peak was never reset)."""
    cost = _fit(tmp_path, max_epochs=2, module=_BigValidation, validate=True)
    assert cost["peak_rss_mb"] > cost["train_peak_rss_mb"] + 300
    assert cost["train_peak_rss_mb"] > 0 and cost["train_peak_cuda_mb"] is None
