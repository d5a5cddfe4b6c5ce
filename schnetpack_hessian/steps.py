"""Training steps as ``spktrain`` runs them, timed and checked for host synchronisations.

A Lightning ``Trainer`` fits a :class:`~schnetpack_hessian.HessianTask` on collated
CPU batches: transfer to the device, forward, loss, metrics, backward, optimiser
step.  :class:`StepMonitor` times the steps and counts the host synchronisations of
chosen ones (:mod:`schnetpack_hessian.syncs`).  Used by the tests and by the device
check (:mod:`schnetpack_hessian.devicecheck`).
"""

import statistics
import time
from typing import Dict, List, Optional, Sequence

import pytorch_lightning as pl
import torch
from torchmetrics import MeanAbsoluteError

import schnetpack.properties as spk_properties
from schnetpack.task import ModelOutput

from schnetpack_hessian import properties
from schnetpack_hessian.hessian import Hessian
from schnetpack_hessian.losses import HessianOutput
from schnetpack_hessian.memory import synchronize
from schnetpack_hessian.models import build_potential
from schnetpack_hessian.packing import registered
from schnetpack_hessian.plan import ProbeSettings
from schnetpack_hessian.syncs import SyncCounter, SyncEvent
from schnetpack_hessian.task import HessianTask

__all__ = [
    "TRAINING_MODES",
    "StepMonitor",
    "hessian_module",
    "labelled_batch",
    "training_task",
    "train_steps",
]

#: the Hessian training modes of a step: full Hessian, Gaussian HVP, HORM rows
TRAINING_MODES = ("full", "hvp", "rows")


def hessian_module(mode: str, n_probes: int = 2, **kwargs) -> Hessian:
    """The :class:`~schnetpack_hessian.Hessian` module of a training mode."""
    if mode == "full":
        return Hessian(mode="full", **kwargs)
    if mode in ("hvp", "rows"):
        probe = "rows" if mode == "rows" else "gaussian"
        probes = ProbeSettings(n=n_probes, kind=probe, seed=0)
        return Hessian(mode="hvp", probes=probes, **kwargs)
    raise ValueError(
        f"unknown training mode {mode!r}; expected one of {TRAINING_MODES}"
    )


def labelled_batch(batch: Dict[str, torch.Tensor], seed: int = 0) -> Dict:
    """``batch`` (a collated CPU batch) with random energy, force and symmetric
    Hessian targets in its dtype (the step's cost does not depend on their values)."""
    n_atoms = batch[spk_properties.n_atoms]
    dtype = batch[spk_properties.R].dtype
    gen = torch.Generator().manual_seed(seed)
    out = dict(batch)
    out["energy"] = torch.randn(len(n_atoms), generator=gen, dtype=dtype)
    out["forces"] = torch.randn(
        batch[spk_properties.R].shape, generator=gen, dtype=dtype
    )
    n_blocks = int((n_atoms * n_atoms).sum())
    blocks = torch.randn((n_blocks, 3, 3), generator=gen, dtype=dtype)
    out[properties.hessian] = blocks + blocks.transpose(1, 2)
    return out


def training_task(
    representation: str,
    mode: str,
    dtype: torch.dtype = torch.float64,
    n_atom_basis: int = 16,
    n_interactions: int = 2,
    cutoff: float = 5.0,
    passes: Optional[Dict] = None,
) -> HessianTask:
    """A :class:`~schnetpack_hessian.HessianTask` as the experiment configs build
    it: energy, forces and Hessian losses with MAE metrics, AdamW."""
    extra = {} if passes is None else {"passes": passes}
    model = build_potential(
        representation,
        [hessian_module(mode, **extra)],
        cutoff=cutoff,
        n_atom_basis=n_atom_basis,
        n_interactions=n_interactions,
        n_rbf=12,
        dtype=dtype,
    )
    outputs = [
        ModelOutput(
            "energy",
            loss_fn=torch.nn.MSELoss(),
            loss_weight=0.01,
            metrics={"MAE": MeanAbsoluteError()},
        ),
        ModelOutput(
            "forces",
            loss_fn=torch.nn.MSELoss(),
            loss_weight=1.0,
            metrics={"MAE": MeanAbsoluteError()},
        ),
        HessianOutput(loss_weight=1.0),
    ]
    return HessianTask(
        model=model,
        outputs=outputs,
        optimizer_cls=torch.optim.AdamW,
        optimizer_args={"lr": 1e-4},
    )


class _Repeated(torch.utils.data.Dataset):
    """The same collated batch ``n`` times, each a fresh copy (the model writes into
    its inputs)."""

    def __init__(self, batch: Dict[str, torch.Tensor], n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.batch.items()}


def _host_optimizer_state(optimizers) -> List[torch.Tensor]:
    """The step counts ``torch.optim`` keeps on the host (all but capturable and
    fused optimisers do): host tensors on a GPU as well."""
    found = []
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            if group.get("capturable") or group.get("fused"):
                continue
            for p in group["params"]:
                step = optimizer.state.get(p, {}).get("step")
                if isinstance(step, torch.Tensor):
                    found.append(step)
    return found


def _host_batch_data(batch: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
    """What the transfer kept of the CPU batch (the host positions of its
    :class:`~schnetpack_hessian.packing.Packing`): host tensors on a GPU as well."""
    packed = registered(batch[spk_properties.n_atoms])
    if packed is None or packed.packing.positions is None:
        return []
    return [packed.packing.positions]


class StepMonitor(pl.Callback):
    """Times training steps and counts the host synchronisations of chosen ones.

    A step is Lightning's ``on_train_batch_start`` to ``on_train_batch_end`` (after
    the transfer to the device: forward, loss, metrics, backward, optimiser step).
    The device is synchronised at both ends (outside the counted window); counted
    steps are not timed (the counter slows Python down).

    Args:
        count_steps: 0-based indices of the steps whose synchronisations to count.
        simulate: the counter's ``simulate`` (None: True on a CPU-only machine).
    """

    def __init__(
        self, count_steps: Sequence[int] = (), simulate: Optional[bool] = None
    ):
        self.count_steps = set(count_steps)
        self.simulate = simulate
        self.seconds: List[float] = []
        self.syncs: Dict[int, List[SyncEvent]] = {}
        self._counter: Optional[SyncCounter] = None
        self._t0 = 0.0
        self._step = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        synchronize(pl_module.device)
        self._step = trainer.global_step
        if self._step in self.count_steps:
            self._counter = SyncCounter(simulate=self.simulate)
            self._counter.mark_host(*_host_optimizer_state(trainer.optimizers))
            self._counter.mark_host(*_host_batch_data(batch))
            self._counter.__enter__()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        counter, self._counter = self._counter, None
        if counter is not None:
            counter.__exit__(None, None, None)
            self.syncs[self._step] = counter.events
            return
        synchronize(pl_module.device)
        self.seconds.append(time.perf_counter() - self._t0)

    def median_ms(self, skip: int = 1) -> Optional[float]:
        """Median step time (ms), without the first ``skip`` timed steps."""
        timed = self.seconds[skip:] or self.seconds
        return 1e3 * statistics.median(timed) if timed else None


def train_steps(
    task: HessianTask,
    batch: Dict[str, torch.Tensor],
    steps: int,
    device: str = "cpu",
    monitor: Optional[StepMonitor] = None,
) -> StepMonitor:
    """Fit ``task`` for ``steps`` steps on copies of the collated CPU ``batch`` with a
    Lightning ``Trainer`` on ``device`` (``cpu``, ``cuda`` or ``cuda:K``)."""
    monitor = monitor or StepMonitor()
    target = torch.device(device)
    accelerator = "gpu" if target.type == "cuda" else "cpu"
    devices = [target.index or 0] if target.type == "cuda" else 1
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[monitor],
    )
    loader = torch.utils.data.DataLoader(_Repeated(batch, steps), batch_size=None)
    trainer.fit(task, train_dataloaders=loader)
    return monitor
