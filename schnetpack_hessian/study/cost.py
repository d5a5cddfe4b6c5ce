"""What a training run costs: wall time per epoch and peak memory (``cost.json``).

:class:`EpochCost` is a Lightning callback; spktrain adds it through the study recipe
(``experiment=study_recipe``).  The training part of an epoch is timed from its start to
the start of validation (or the epoch's end when there is none), so validation's exact
Hessians do not count; both the wall time and the process's CPU time are recorded
(with one thread the CPU time is the compute, whatever else the machine runs).  Peak
memory is recorded twice: for the whole process (``peak_rss_mb``, ``getrusage``
maximum RSS; ``peak_cuda_mb``, ``torch.cuda.max_memory_allocated``) and for the
training part of the epochs alone (``train_peak_rss_mb``, ``train_peak_cuda_mb``): the
peaks are reset when an epoch's training starts and read when it stops, so
validation's exact Hessians do not count (the resident-set peak is reset through
``/proc/self/clear_refs``; None where the system does not allow it).
"""

import json
import resource
import time
from pathlib import Path
from typing import List, Optional

import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from schnetpack_hessian.memory import rss_high_water_mb

__all__ = ["EpochCost", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_rss_peak() -> bool:
    """Reset the resident-set high-water mark (``VmHWM``); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class EpochCost(Callback):
    """Record the training wall time of every epoch and the peak memory.

    Writes ``path`` (relative to the run directory) after every epoch, from rank 0
    alone under DDP (its process's figures; tests/test_ddp.py); a resumed training
    continues the record of the run it resumes.  Fields:
    ``epoch_seconds`` and ``epoch_cpu_seconds`` (lists), ``peak_rss_mb``,
    ``peak_cuda_mb`` (None on CPU), ``train_peak_rss_mb``, ``train_peak_cuda_mb``
    (training parts only), ``device``.

    Args:
        path: the JSON file to write.
    """

    def __init__(self, path: str = "cost.json"):
        super().__init__()
        self.path = Path(path)
        self.epoch_seconds: List[float] = []
        self.epoch_cpu_seconds: List[float] = []
        self._start: Optional[float] = None
        self._cpu_start = 0.0
        self._device: Optional[torch.device] = None
        self._rss_reset = False
        self.train_peak_rss_mb: Optional[float] = None
        self.train_peak_cuda_mb: Optional[float] = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule):
        """A training resumed from a checkpoint keeps the record of the epochs it
        had finished (the file may hold more: epochs after that checkpoint, redone now).
        """
        done = trainer.current_epoch
        if done > 0 and self.path.exists() and not self.epoch_seconds:
            try:
                earlier = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return
            self.epoch_seconds = list(earlier.get("epoch_seconds", []))[:done]
            self.epoch_cpu_seconds = list(earlier.get("epoch_cpu_seconds", []))[:done]
            self.train_peak_rss_mb = earlier.get("train_peak_rss_mb")
            self.train_peak_cuda_mb = earlier.get("train_peak_cuda_mb")

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule):
        self._device = pl_module.device
        if self._device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self._device)
        self._rss_reset = _reset_rss_peak()
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()

    def _stop(self) -> None:
        if self._start is not None:
            self.epoch_seconds.append(time.perf_counter() - self._start)
            self.epoch_cpu_seconds.append(time.process_time() - self._cpu_start)
            self._start = None
            self._read_train_peaks()

    def _read_train_peaks(self) -> None:
        """Fold this epoch's training peaks into the run's."""
        rss = rss_high_water_mb() if self._rss_reset else None
        if rss is not None:
            self.train_peak_rss_mb = max(self.train_peak_rss_mb or 0.0, rss)
        if self._device is not None and self._device.type == "cuda":
            cuda = torch.cuda.max_memory_allocated(self._device) / 2**20
            self.train_peak_cuda_mb = max(self.train_peak_cuda_mb or 0.0, cuda)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule):
        if not trainer.sanity_checking:
            self._stop()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule):
        self._stop()
        if trainer.is_global_zero:
            self.write(pl_module.device)

    def write(self, device: torch.device) -> None:
        """Write the measurements so far."""
        cuda = device.type == "cuda"
        record = {
            "epoch_seconds": self.epoch_seconds,
            "epoch_cpu_seconds": self.epoch_cpu_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": (
                torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
            ),
            "train_peak_rss_mb": self.train_peak_rss_mb,
            "train_peak_cuda_mb": self.train_peak_cuda_mb,
            "device": str(device),
        }
        self.path.write_text(json.dumps(record, indent=1))
