"""``DIR/RESULTS.md``: the study's tables, figures, goals and the command behind them."""

from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from schnetpack_hessian.markdown import table
from schnetpack_hessian.study import figures
from schnetpack_hessian.study.aggregate import GroupSummary, Stat, summarize
from schnetpack_hessian.study.goals import GOAL_SET, check_goals
from schnetpack_hessian.study.matrix import Arm, StudyPlan
from schnetpack_hessian.study.scoring import METRICS, TEST_SETS

__all__ = ["accuracy_table", "cost_table", "goals_table", "write_report"]

Record = Dict[str, object]

_SET_TITLES = {
    "train_offpath": "(a) IRC and NMS geometries of the training reactions",
    "heldout": "(b) every structure of the held-out reactions (by-reaction folds)",
}


def accuracy_table(summary: Dict[str, GroupSummary], test_set: str) -> str:
    """Markdown table: mean ± sd of every metric on ``test_set``, one row per group."""
    keys = [
        k
        for k in METRICS
        if any(k in s.metrics.get(test_set, {}) for s in summary.values())
    ]
    header = ["arm", "runs"] + [f"{METRICS[k][0]} ({METRICS[k][1]})" for k in keys]
    rows = []
    for s in summary.values():
        if test_set not in s.metrics:
            continue
        m = s.metrics[test_set]
        rows.append([s.group, len(s.runs)] + [m.get(k, "–") for k in keys])
    return table(header, rows)


def cost_table(summary: Dict[str, GroupSummary], max_epochs: int) -> str:
    """Markdown table: epochs, early stops, seconds per epoch (and × the E+F epoch of
    the same model), peak memory, CPU hours per run of training (the whole spktrain
    process) and of scoring."""
    header = [
        "arm",
        "epochs",
        "best epoch",
        "best val_loss",
        "early-stopped runs",
        "s / epoch (training)",
        "× E+F epoch",
        "peak RSS (MB)",
        "peak CUDA (MB)",
        "CPU h / run: training",
        "CPU h / run: scoring",
    ]
    rows = []
    for s in summary.values():
        ef = summary.get(Arm("EF", s.arm["model"], "none").group)
        ratio = "–"
        if ef is not None and ef.epoch_seconds.n and s.epoch_seconds.n:
            ratio = f"{s.epoch_seconds.mean / ef.epoch_seconds.mean:.1f}"
        stopped = f"{s.early_stopped(max_epochs)}/{len(s.runs)}"
        rows.append(
            [
                s.group,
                s.n_epochs,
                s.best_epoch,
                s.best_val_loss,
                stopped,
                s.epoch_seconds,
                ratio,
                s.peak_rss_mb,
                s.peak_cuda_mb,
                s.train_cpu_hours,
                s.score_cpu_hours,
            ]
        )
    return table(header, rows)


def goals_table(
    summary: Dict[str, GroupSummary], hessian: str = "full", test_set: str = GOAL_SET
) -> str:
    """Markdown table of the issue's goals for every model in the study (E+F+H with
    the Hessian mode ``hessian`` against E+F, accuracy judged on ``test_set``)."""
    models = sorted({str(s.arm["model"]) for s in summary.values()})
    rows = [
        [model, g.text, f"**{g.status}**", g.evidence]
        for model in models
        for g in check_goals(summary, model, hessian, test_set)
    ]
    return table(["model", "goal", "status", "evidence"], rows)


_TS_METHODS = {
    "model_hessian": "the model's Hessian",
    "sella_updates": "Sella's Hessian updates",
}


def _ts_protocol(plan: StudyPlan) -> str:
    t = plan.ts_settings
    starts = f"{t.n_perturbations} seeded {t.perturbation_rms:g} Å-RMS perturbations"
    if t.irc_starts:
        starts += " and the highest IRC point on each side"
    starts += " of each held-out reference TS"
    if t.endpoint_starts:
        starts = (
            "the reaction's reactant and product (the highest model energy of a "
            f"{t.n_images}-image IDPP path as the guess) and, as the second protocol, "
            + starts
        )
    searched = f"E+F and E+F+H ({plan.ts_hessian})"
    fractions = ", ".join(f"{f * 100:g} %" for f in plan.ts_fractions)
    reactions = (
        f"a seeded {t.max_reactions} held-out reactions per run"
        if t.max_reactions
        else "every held-out reaction"
    )
    irc = (
        "; from the end points the model's IRC from the saddle must also relax to "
        "the reactant's and product's bond graphs (intended)"
        if t.endpoint_starts and t.irc_check
        else ""
    )
    return (
        f"TS searches for {searched} (E+F at 100 %, E+F+H at {fractions} of the "
        f"training data) with Sella on {reactions}, from {starts}, with "
        f"{' and '.join(_TS_METHODS[m] for m in t.methods)}, at most {t.max_steps} "
        "steps, fmax "
        f"{t.fmax:g} eV/Å; a success is a converged first-order saddle point within "
        f"{t.rmsd_threshold:g} Å RMSD of the reference TS{irc}."
    )


def _protocol(plan: StudyPlan) -> str:
    b = plan.budget
    return "\n".join(
        [
            f"- {len(plan.arms)} runs: {len({a.group for a in plan.arms})} arms × "
            f"{len({(a.seed, a.fold) for a in plan.arms})} (seed, fold) pairs; "
            f"{plan.n_folds} by-reaction folds, each reaction held out once.",
            "- Training and validation: critical points (reactant, product, TS) of the "
            "training reactions only; 15 % of them validate (early stopping, LR "
            "schedule)"
            + (
                f", at most {b.val_per_reaction} per reaction"
                if b.val_per_reaction
                else ""
            )
            + ". Nothing is tuned on held-out reactions.",
            "- Test (a): IRC/NMS geometries of the training reactions; test (b): every "
            "structure of the held-out reactions. Metrics: `spkhess-eval`'s library "
            "(`evaluate_downstream`, exact model Hessians); "
            + (
                _ts_protocol(plan)
                if plan.ts_settings is not None
                else "TS searches skipped."
            ),
            f"- Recipe (`experiment=study_recipe`, the same for every arm): "
            f"`loss={b.loss}`, AdamW lr {b.lr:g} (weight decay {b.weight_decay:g}), "
            + (
                f"gradient norm clipped at {b.gradient_clip:g}, "
                if b.gradient_clip
                else "no gradient clipping, "
            )
            + f"ReduceLROnPlateau (factor 0.5, "
            f"patience {b.lr_patience}), warm-up {b.warmup_steps} steps, EMA 0.99, "
            f"early stopping on val_loss (patience {b.patience}), at most "
            f"{b.max_epochs} epochs, batch {b.batch_size}, {b.n_atom_basis} features, "
            f"{b.n_interactions} interactions.",
            "- Cost: training wall time per epoch (median of each run, validation "
            "excluded) and peak memory (RSS of the training process on CPU, "
            "`torch.cuda.max_memory_allocated` on GPU).",
        ]
    )


def write_report(
    plan: StudyPlan,
    records: Sequence[Record],
    out: Path,
    command: str,
    data_label: str,
    note: Optional[str] = None,
    zero_force: Optional[Dict[str, Stat]] = None,
    harmonic: Optional[Dict[str, Stat]] = None,
) -> Path:
    """Write ``out/RESULTS.md`` and its figures (``out/figures/``) from the finished
    ``records`` of ``plan``; a study with unfinished arms is labelled partial.

    Args:
        zero_force: force MAE of the zero-force predictor per test set
            (:func:`~schnetpack_hessian.study.baselines.zero_force_baseline`), shown
            under each accuracy table.
        harmonic: force MAE of the harmonic predictor from the parent critical
            point's reference Hessian per test set
            (:func:`~schnetpack_hessian.study.baselines.harmonic_force_baseline`).
    """
    out = Path(out)
    names = {a.name for a in plan.arms}
    records = [r for r in records if r["name"] in names]
    summary = summarize(records)
    fig_dir = out / "figures"
    pictures: List[str] = []
    if summary:
        pictures += figures.bar_charts(
            summary,
            fig_dir,
            ["energy_mae", "forces_mae", "hessian_mae", "frequency_mae"],
        )
        pictures += figures.data_efficiency(summary, fig_dir)
        pictures += figures.cost_accuracy(summary, fig_dir)
        pictures += figures.learning_curves(summary, out / "runs", fig_dir)
    done = len(records)
    status = (
        f"complete: {done} of {len(plan.arms)} runs"
        if done == len(plan.arms)
        else f"**PARTIAL: {done} of {len(plan.arms)} runs finished** (rerun the "
        "command to continue; finished runs are not retrained)"
    )
    parts = [
        f"# Study results ({plan.name})",
        "",
        f"Data: {data_label}. Status: {status}.",
        "",
        "Made by:",
        "",
        "```",
        command,
        "```",
        "",
    ]
    if note:
        parts += [note, ""]
    parts += ["## Protocol", "", _protocol(plan), ""]
    if summary:
        parts += [
            "Mean ± sample standard deviation over the runs (seeds × folds) of an arm.",
            "",
        ]
        for test_set in TEST_SETS:
            parts += [
                f"## Accuracy: {_SET_TITLES[test_set]}",
                "",
                accuracy_table(summary, test_set),
                "",
            ]
            if zero_force and zero_force.get(test_set) and zero_force[test_set].n:
                parts += [
                    "Zero-force predictor (no model; the training forces at critical "
                    f"points are ≈ 0): force MAE {zero_force[test_set]} kcal/mol/Å "
                    "over the folds.",
                    "",
                ]
            if harmonic and harmonic.get(test_set) and harmonic[test_set].n:
                parts += [
                    "Harmonic predictor (no model; F ≈ F_c − H_c·Δx from the nearest "
                    "critical point of the structure's reaction, with its reference "
                    f"Hessian): force MAE {harmonic[test_set]} kcal/mol/Å over the "
                    "folds, on the structures that are not critical points.",
                    "",
                ]
        parts += ["## Cost", "", cost_table(summary, plan.budget.max_epochs), ""]
        for test_set in TEST_SETS:
            parts += [
                f"## Goals: E+F+H ({plan.ts_hessian}) against E+F, accuracy on "
                f"test set {test_set!r}",
                "",
                goals_table(summary, plan.ts_hessian, test_set),
                "",
            ]
        parts += ["## Figures", ""] + [f"![{p}](figures/{p})" for p in pictures] + [""]
    parts += ["## Budget", "", "```", str(asdict(plan.budget)), "```", ""]
    path = out / "RESULTS.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path
