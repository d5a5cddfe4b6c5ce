"""Training epoch times of the study's Hessian modes, with and without size buckets.

The measurement behind ``spkhess-bench --epochs DATA``: short spktrain runs of the
study recipe (``experiment=study_recipe``) on one by-reaction fold of a data set, for
E+F, E+F+H with the full Hessian and with HVP probes, each once with plain shuffling and
once with :class:`~schnetpack_hessian.data.sampler.SizeBucketBatchSampler`
(``data.size_buckets``).  The figures per run are the medians of the training wall
time and of the process's CPU time over the epochs after the first (validation
excluded, :class:`~.cost.EpochCost`); with one thread the CPU time is the compute even
on a busy machine.  Runs are
kept in ``DIR/runs/<arm>-<sampler>/``; a finished one is not rerun, an unfinished
one is started again.
"""

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from schnetpack_hessian.data.sampler import SizeBucketBatchSampler
from schnetpack_hessian.markdown import table
from schnetpack_hessian.study.matrix import Arm, Budget, StudyPlan
from schnetpack_hessian.study.runner import StudyContext, StudyData
from schnetpack_hessian.study.splits import make_split, write_split_file

__all__ = [
    "EPOCH_ARMS",
    "EpochTime",
    "time_epochs",
    "epoch_table",
    "full_hessian_passes",
    "train_indices",
]

#: What is timed: E+F, E+F+H (full), E+F+H (HVP k=2).
EPOCH_ARMS = (
    Arm("EF", hessian="none"),
    Arm("EFH", hessian="full"),
    Arm("EFH", hessian="hvp-k2"),
)


@dataclass(frozen=True)
class EpochTime:
    """One timed run.

    Attributes:
        group: the arm (:attr:`Arm.group`).
        buckets: ``data.size_buckets`` (None: plain shuffling).
        n_train: training structures.
        n_batches: training batches per epoch.
        seconds: median training wall seconds per epoch, epochs 2..n.
        cpu_seconds: median training CPU seconds per epoch, epochs 2..n.
        peak_rss_mb: peak resident memory of the training process, MiB.
    """

    group: str
    buckets: Optional[int]
    n_train: int
    n_batches: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float


def _label(buckets: Optional[int]) -> str:
    return "plain" if buckets is None else f"buckets{buckets}"


def _split(data: StudyData, fraction: float, n_folds: int):
    return make_split(data.kinds, data.reactions, n_folds, 0, 1, fraction)


def train_indices(
    data: StudyData, fraction: float = 1.0, n_folds: int = 3
) -> List[int]:
    """The training structures :func:`time_epochs` uses (fold 0, seed 1)."""
    return list(_split(data, fraction, n_folds).train)


def time_epochs(
    data: StudyData,
    out: Path,
    arms: Sequence[Arm] = EPOCH_ARMS,
    buckets: Sequence[Optional[int]] = (None, 1),
    n_epochs: int = 4,
    fraction: float = 1.0,
    n_folds: int = 3,
    threads: int = 1,
    device: str = "cpu",
    budget: Budget = Budget(),
) -> List[EpochTime]:
    """Train each arm for ``n_epochs`` with each sampler and read its epoch times.

    Args:
        data: the data set (its by-reaction fold 0 of ``n_folds`` is held out).
        out: directory of the runs.
        fraction: fraction of the training critical points (seed 1's nested subset).
        n_epochs: epochs per run (at least 2: the first is not counted).
        budget: the recipe (model size, batch size, lr); its epochs, patience and TS
            searches are replaced by ``n_epochs``, no early stop and none.

    Raises:
        ValueError: ``n_epochs`` < 2.
        StudyError: a training failed (its log named).
    """
    if n_epochs < 2:
        raise ValueError(f"time_epochs: n_epochs {n_epochs} < 2 (epoch 1 is warm-up)")
    out = Path(out).resolve()
    budget = replace(budget, max_epochs=n_epochs, patience=n_epochs + 1)
    plan = StudyPlan("epochs", tuple(arms), n_folds, budget, ts_settings=None)
    context = StudyContext(plan, data, out, threads, device)
    split = _split(data, fraction, n_folds)
    split_file = write_split_file(
        split,
        split.heldout_critical(data.kinds),
        out / "split.npz",
        data.path,
        len(data.structures),
    )
    n_batches = int(np.ceil(len(split.train) / budget.batch_size))
    rows = []
    for arm in arms:
        for width in buckets:
            run_id = f"{arm.group}-{_label(width)}"
            run_dir = out / "runs" / run_id
            cost_file = run_dir / "cost.json"
            record = json.loads(cost_file.read_text()) if cost_file.exists() else {}
            if len(record.get("epoch_cpu_seconds", [])) < n_epochs:
                # an unfinished (or older) run would resume from its checkpoint
                shutil.rmtree(run_dir, ignore_errors=True)
                args = context.spktrain_args(arm, split_file, run_id)
                args.append(f"data.size_buckets={'null' if width is None else width}")
                context.train(args, run_id)
                record = json.loads(cost_file.read_text())
            rows.append(
                EpochTime(
                    group=arm.group,
                    buckets=width,
                    n_train=len(split.train),
                    n_batches=n_batches,
                    seconds=float(np.median(record["epoch_seconds"][1:])),
                    cpu_seconds=float(np.median(record["epoch_cpu_seconds"][1:])),
                    peak_rss_mb=float(record["peak_rss_mb"]),
                )
            )
    return rows


def epoch_table(rows: Sequence[EpochTime], measure: str = "cpu_seconds") -> str:
    """A markdown table: seconds per epoch per arm and sampler, bucket/plain and
    the ratio to the E+F epoch of the same sampler.

    Args:
        measure: ``cpu_seconds`` (CPU time) or ``seconds`` (wall time).
    """
    seconds: Dict[tuple, float] = {
        (r.group, r.buckets): getattr(r, measure) for r in rows
    }
    unit = "CPU s" if measure == "cpu_seconds" else "s"
    samplers = list(dict.fromkeys(r.buckets for r in rows))
    groups = list(dict.fromkeys(r.group for r in rows))
    base = next((g for g in groups if g.startswith("EF-")), None)
    head = ["arm"]
    for b in samplers:
        head += [f"{unit}/epoch ({_label(b)})", f"× E+F ({_label(b)})"]
    if len(samplers) == 2:
        head.append(f"{_label(samplers[1])} / {_label(samplers[0])}")
    body = []
    for g in groups:
        cells = [g]
        for b in samplers:
            s = seconds.get((g, b))
            ref = seconds.get((base, b)) if base else None
            cells.append("–" if s is None else f"{s:.3g}")
            cells.append("–" if s is None or not ref else f"{s / ref:.2f}")
        if len(samplers) == 2:
            a, b = (seconds.get((g, x)) for x in samplers)
            cells.append("–" if a is None or b is None else f"{b / a:.2f}")
        body.append(cells)
    return table(head, body)


def full_hessian_passes(
    sizes: Sequence[int],
    batch_size: int,
    bucket_width: Optional[int] = None,
    n_epochs: int = 20,
    seed: int = 0,
    atom_weighted: bool = False,
) -> float:
    """Mean seeded backward passes per epoch of full-Hessian training, a batch costing
    ``3·max(N) − 6`` passes; with ``atom_weighted`` each pass counts the batch's atoms
    (a pass costs about as much as the batch has atoms), so the figure tracks compute.

    The count, not a timing: what size buckets can save, free of machine noise.

    Args:
        sizes: atom count of every training structure.
        batch_size: structures per batch.
        bucket_width: :class:`SizeBucketBatchSampler`'s width; None: plain shuffling
            (a seeded permutation cut into batches, as PyTorch's ``RandomSampler``).
        n_epochs: epochs averaged over.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if bucket_width is None:
        rng = np.random.default_rng(seed)
        epochs = []
        for _ in range(n_epochs):
            order = rng.permutation(len(sizes))
            epochs.append(
                [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
            )
    else:
        sampler = SizeBucketBatchSampler(sizes, batch_size, bucket_width, seed=seed)
        epochs = [sampler.batches(epoch) for epoch in range(n_epochs)]

    def cost(batch: np.ndarray) -> int:
        passes = max(3 * int(sizes[batch].max()) - 6, 1)
        return passes * int(sizes[batch].sum()) if atom_weighted else passes

    per_epoch = [sum(cost(b) for b in batches) for batches in epochs]
    return float(np.mean(per_epoch))
