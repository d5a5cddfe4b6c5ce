"""Mean ± standard deviation over the seeds and folds of each arm group.

A *record* is one finished arm (``result.json``, see :mod:`.runner`); a *summary*
maps each group (:attr:`~.matrix.Arm.group`) to its statistics per test set and
metric, and to its cost.
"""

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "Stat",
    "GroupSummary",
    "stat",
    "summarize",
    "learning_curve",
]

Record = Dict[str, object]


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (NaN for one value) and count."""

    mean: float
    sd: float
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "–"
        digits = 2 if abs(self.mean) < 100 else 0
        if self.n == 1:
            return f"{self.mean:.{digits}f} (n=1)"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def stat(values: Sequence[float]) -> Stat:
    """:class:`Stat` of the finite ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)])
    if len(v) == 0:
        return Stat(float("nan"), float("nan"), 0)
    sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return Stat(float(v.mean()), sd, len(v))


@dataclass(frozen=True)
class GroupSummary:
    """Statistics of one arm group over its finished runs.

    Attributes:
        group: the group's name.
        arm: the arm fields of its first run (targets, model, hessian, fraction).
        metrics: ``{test set: {metric: Stat}}``.
        epoch_seconds: median training seconds per epoch, over runs.
        n_epochs: epochs until early stopping or the limit, over runs.
        best_epoch: epoch of the lowest validation loss (the model kept), over runs.
        best_val_loss: that validation loss, over runs.
        peak_rss_mb: peak resident memory of the training process, over runs.
        peak_cuda_mb: peak CUDA memory, over runs (empty on CPU).
        runs: names of the runs.
        run_epochs: epochs each run trained (None where unknown).
        train_cpu_hours: CPU hours of the spktrain processes (start-up, training,
            validation, test) per run, where recorded.
        score_cpu_hours: CPU hours of scoring per run.
    """

    group: str
    arm: Dict[str, object]
    metrics: Dict[str, Dict[str, Stat]]
    epoch_seconds: Stat
    n_epochs: Stat
    best_epoch: Stat
    best_val_loss: Stat
    peak_rss_mb: Stat
    peak_cuda_mb: Stat
    runs: Tuple[str, ...]
    run_epochs: Tuple[Optional[int], ...] = ()
    train_cpu_hours: Stat = Stat(float("nan"), float("nan"), 0)
    score_cpu_hours: Stat = Stat(float("nan"), float("nan"), 0)

    def early_stopped(self, max_epochs: int) -> int:
        """Runs that stopped before ``max_epochs`` (early stopping on val_loss)."""
        return sum(1 for e in self.run_epochs if e is not None and e < max_epochs)


def _hours(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else seconds / 3600.0


def _cost(records: Sequence[Record], key: str) -> Stat:
    return stat([r.get("cost", {}).get(key) for r in records])


def summarize(records: Sequence[Record]) -> Dict[str, GroupSummary]:
    """``{group: GroupSummary}`` in the order the groups first appear."""
    groups: Dict[str, List[Record]] = {}
    for r in records:
        groups.setdefault(str(r["group"]), []).append(r)
    out = {}
    for name, runs in groups.items():
        sets = sorted({s for r in runs for s in r["metrics"]})
        metrics = {}
        for s in sets:
            keys = sorted({k for r in runs for k in r["metrics"].get(s, {})})
            metrics[s] = {
                k: stat([r["metrics"].get(s, {}).get(k, float("nan")) for r in runs])
                for k in keys
            }
        out[name] = GroupSummary(
            group=name,
            arm=dict(runs[0]["arm"]),
            metrics=metrics,
            epoch_seconds=_cost(runs, "epoch_seconds_median"),
            n_epochs=_cost(runs, "n_epochs"),
            best_epoch=_cost(runs, "best_epoch"),
            best_val_loss=_cost(runs, "best_val_loss"),
            peak_rss_mb=_cost(runs, "peak_rss_mb"),
            peak_cuda_mb=_cost(runs, "peak_cuda_mb"),
            runs=tuple(str(r["name"]) for r in runs),
            run_epochs=tuple(r.get("cost", {}).get("n_epochs") for r in runs),
            train_cpu_hours=stat(
                [_hours(r.get("cost", {}).get("train_cpu_seconds")) for r in runs]
            ),
            score_cpu_hours=stat([_hours(r.get("eval_cpu_seconds")) for r in runs]),
        )
    return out


def learning_curve(run_dir: Path) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(epochs, val_loss)`` from spktrain's CSV logs in ``run_dir`` (None: no log).

    A resumed training logs to a new ``csv/version_<k>``; the versions are merged in
    order, a later one's value of an epoch replacing an earlier one's.
    """
    files = sorted(
        Path(run_dir).glob("csv/**/metrics.csv"),
        key=lambda p: (_version(p), str(p)),
    )
    by_epoch: Dict[int, float] = {}
    for path in files:
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get("val_loss"):
                    by_epoch[int(row["epoch"])] = float(row["val_loss"])
    if not by_epoch:
        return None
    epochs = np.array(sorted(by_epoch))
    return epochs, np.array([by_epoch[e] for e in epochs])


def _version(path: Path) -> int:
    name = path.parent.name
    return int(name.split("_")[-1]) if name.split("_")[-1].isdigit() else -1
