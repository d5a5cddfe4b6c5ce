"""spktrain killed mid-epoch resumes from last.ckpt with the same command (integration).

The kill is deterministic: a callback (written to a temporary module) ends the process
with ``os._exit`` in the middle of the second epoch, once; rerunning the identical
command must continue from the checkpoint of the first epoch, also when every
``torch.load`` is forced to ``weights_only=True`` (the torch >= 2.6 default).
"""

import json
import os

import pytest
import torch

from schnetpack_hessian.data import write
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian.testing import run_spktrain

pytestmark = pytest.mark.integration

KILLER = '''
import json
import os
from pathlib import Path

from pytorch_lightning import Callback


class KillOnce(Callback):
    """Record every epoch start; end the process mid-epoch ``epoch`` the first time."""

    def __init__(self, epoch: int, batch: int, marker: str):
        self.epoch, self.batch, self.marker = epoch, batch, Path(marker)

    def on_train_epoch_start(self, trainer, pl_module):
        log = self.marker.with_suffix(".epochs")
        seen = json.loads(log.read_text()) if log.exists() else []
        log.write_text(json.dumps(seen + [trainer.current_epoch]))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (
            trainer.current_epoch == self.epoch
            and batch_idx == self.batch
            and not self.marker.exists()
        ):
            self.marker.touch()
            os._exit(137)
'''


@pytest.mark.parametrize(
    "weights_only",
    [
        True,
        # a checkpoint that resumes under forced weights-only loading resumes under
        # torch's default too; the default's own run is the slow set's
        pytest.param(False, marks=pytest.mark.slow),
    ],
)
def test_killed_run_resumes_from_last_checkpoint(tmp_path, weights_only):
    data = tmp_path / "reactive.h5"
    write(data, make_atoms(n_structures=36, seed=3, n_reactions=6, sizes=(3, 4)))
    (tmp_path / "killer.py").write_text(KILLER)
    marker = tmp_path / "killed"
    env = dict(
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        TORCH_FORCE_WEIGHTS_ONLY_LOAD="1" if weights_only else "0",
    )
    command = [
        "experiment=hessian_demo",
        f"data.datapath={data}",
        "data.batch_size=4",
        "trainer.max_epochs=3",
        "callbacks.early_stopping.patience=10",
        "model.representation.n_atom_basis=16",
        "model.representation.n_interactions=1",
        "globals.atomrefs=False",
        "run.id=resume",
        "+callbacks.kill._target_=killer.KillOnce",
        "+callbacks.kill.epoch=1",
        "+callbacks.kill.batch=1",
        f"+callbacks.kill.marker={marker}",
    ]
    first = run_spktrain(command, tmp_path, env=env)
    assert first.returncode == 137, first.stderr[-3000:]
    run = tmp_path / "runs" / "resume"
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists()
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] == 0
    # what a resume must restore: optimiser, learning-rate scheduler and EMA weights
    assert state["optimizer_states"] and state["optimizer_states"][0]["state"]
    assert state["lr_schedulers"]
    ema = [v for k, v in state["callbacks"].items() if "ExponentialMovingAverage" in k]
    assert ema and ema[0]

    second = run_spktrain(command, tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from checkpoint" in second.stdout + second.stderr
    # epochs 0 and 1 (killed) ran first; the rerun repeats only the killed epoch
    assert json.loads(marker.with_suffix(".epochs").read_text()) == [0, 1, 1, 2]
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 2
    assert (run / "extrapolation_report.json").exists()
