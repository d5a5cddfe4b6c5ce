"""The study's figures (PNG): bar charts per metric, data efficiency, cost vs accuracy
and learning curves.  Every function returns the written file names (relative to the
output directory), empty where the study has nothing to plot."""

from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from schnetpack_hessian.study.aggregate import (
    GroupSummary,
    learning_curve,
)  # noqa: E402
from schnetpack_hessian.study.goals import GOAL_SET  # noqa: E402
from schnetpack_hessian.study.matrix import FRACTIONS  # noqa: E402
from schnetpack_hessian.study.scoring import METRICS, TEST_SETS  # noqa: E402

__all__ = ["bar_charts", "data_efficiency", "cost_accuracy", "learning_curves"]

_DPI = 90
_SET_LABELS = {
    "train_offpath": "IRC/NMS of training reactions",
    "heldout": "held-out reactions",
}


def _save(fig, out: Path, name: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / name, dpi=_DPI)
    plt.close(fig)
    return name


def bar_charts(
    summary: Dict[str, GroupSummary], out: Path, metrics: Sequence[str]
) -> List[str]:
    """One bar chart per metric: mean ± sd of every group on both test sets."""
    names = []
    groups = list(summary)
    for key in metrics:
        if not any(
            key in s.metrics.get(t, {}) for s in summary.values() for t in TEST_SETS
        ):
            continue
        label, unit = METRICS[key]
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) + 1.5), 3.4))
        x = np.arange(len(groups))
        width = 0.8 / len(TEST_SETS)
        for j, test_set in enumerate(TEST_SETS):
            stats = [summary[g].metrics.get(test_set, {}).get(key) for g in groups]
            mean = [s.mean if s else np.nan for s in stats]
            sd = [s.sd if s and s.n > 1 else 0.0 for s in stats]
            ax.bar(
                x + (j - (len(TEST_SETS) - 1) / 2) * width,
                mean,
                width,
                yerr=sd,
                capsize=3,
                label=_SET_LABELS[test_set],
            )
        ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"{label} ({unit})")
        ax.legend(fontsize=7)
        names.append(_save(fig, out, f"bars_{key}.png"))
    return names


def data_efficiency(summary: Dict[str, GroupSummary], out: Path) -> List[str]:
    """Energy, force and Hessian MAE against the training fraction, one curve per
    target/Hessian mode/model that ran at several fractions (arms run at one
    fraction only are in the bar charts)."""
    series: Dict[str, List[GroupSummary]] = {}
    for s in summary.values():
        distilled = "-distilled" if s.arm.get("teacher") else ""
        key = f"{s.arm['targets']}-{s.arm['hessian']}{distilled}-{s.arm['model']}"
        series.setdefault(key, []).append(s)
    series = {k: v for k, v in series.items() if len(v) > 1}
    if not series:
        return []
    keys = ("energy_mae", "forces_mae", "hessian_mae")
    fig, axes = plt.subplots(1, len(keys), figsize=(11, 3.3))
    for ax, key in zip(axes, keys):
        for name, members in series.items():
            members = sorted(members, key=lambda s: s.arm["fraction"])
            f = [100 * s.arm["fraction"] for s in members]
            stats = [s.metrics.get(GOAL_SET, {}).get(key) for s in members]
            mean = [st.mean if st else np.nan for st in stats]
            sd = [st.sd if st and st.n > 1 else 0.0 for st in stats]
            ax.errorbar(f, mean, yerr=sd, marker="o", capsize=3, label=name)
        label, unit = METRICS[key]
        ax.set_xscale("log", base=2)
        ticks = [100 * f for f in FRACTIONS]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("training critical points (%)")
        ax.set_ylabel(f"{label} ({unit})")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"data efficiency ({_SET_LABELS[GOAL_SET]})", fontsize=9)
    return [_save(fig, out, "data_efficiency.png")]


def cost_accuracy(summary: Dict[str, GroupSummary], out: Path) -> List[str]:
    """Hessian and force MAE against the training seconds per epoch."""
    points = [s for s in summary.values() if s.epoch_seconds.n]
    if not points:
        return []
    keys = ("hessian_mae", "forces_mae")
    fig, axes = plt.subplots(1, len(keys), figsize=(9, 3.4))
    for ax, key in zip(axes, keys):
        for s in points:
            st = s.metrics.get(GOAL_SET, {}).get(key)
            if st is None:
                continue
            ax.errorbar(
                s.epoch_seconds.mean,
                st.mean,
                yerr=st.sd if st.n > 1 else 0.0,
                xerr=s.epoch_seconds.sd if s.epoch_seconds.n > 1 else 0.0,
                marker="o",
                capsize=3,
                label=s.group,
            )
        label, unit = METRICS[key]
        ax.set_xlabel("training wall time per epoch (s)")
        ax.set_ylabel(f"{label} ({unit})")
    axes[0].legend(fontsize=6)
    fig.suptitle(f"cost vs accuracy ({_SET_LABELS[GOAL_SET]})", fontsize=9)
    return [_save(fig, out, "cost_accuracy.png")]


def learning_curves(
    summary: Dict[str, GroupSummary], runs_dir: Path, out: Path
) -> List[str]:
    """Validation loss (relative to its first epoch) of every run on all the training
    data, one panel per model and a colour per arm; a dot marks the epoch early
    stopping kept.  (Runs on fractions of the data are left out: their curves would
    hide the comparison at equal data.)"""
    groups = [s for s in summary.values() if s.arm.get("fraction", 1.0) == 1.0]
    models = list(dict.fromkeys(s.arm["model"] for s in groups))
    curves = {run: learning_curve(runs_dir / run) for s in groups for run in s.runs}
    if not any(c is not None for c in curves.values()):
        return []
    fig, axes = plt.subplots(
        1, len(models), figsize=(4.2 * len(models) + 1.8, 3.6), squeeze=False
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, model in zip(axes[0], models):
        members = [s for s in groups if s.arm["model"] == model]
        for i, s in enumerate(members):
            colour = colours[i % len(colours)]
            label = s.group.replace(f"-{model}-100pct", "")
            for j, run in enumerate(s.runs):
                curve = curves.get(run)
                if curve is None:
                    continue
                epochs, loss = curve
                relative = loss / loss[0]
                ax.plot(
                    epochs,
                    relative,
                    color=colour,
                    lw=0.9,
                    label=label if j == 0 else None,
                )
                best = int(np.argmin(loss))
                ax.plot(epochs[best], relative[best], "o", color=colour, ms=3)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(model, fontsize=9)
    axes[0][0].set_ylabel("val_loss / first val_loss")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return [_save(fig, out, "learning_curves.png")]
