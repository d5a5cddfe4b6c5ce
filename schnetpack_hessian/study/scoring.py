"""A trained run scored on the study's two test sets with ``spkhess-eval``'s library.

Test set (a) ``train_offpath`` holds the IRC/NMS structures of the training reactions,
(b) ``heldout`` every structure of the held-out reactions.  Each is evaluated with
:func:`~schnetpack_hessian.evaluation.evaluate_downstream` (exact model Hessians) and
reduced to the flat numbers the report tabulates, in the study's units (kcal/mol,
kcal/mol/Å, kcal/mol/Å², cm⁻¹): each metric converts by its own dimension, and a
column's unit is the dimension its metric declares.
"""

from pathlib import Path
from typing import Dict, Optional, Sequence

from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.evaluation.downstream import (
    DownstreamReport,
    evaluate_downstream,
)
from schnetpack_hessian.evaluation.model import load_model
from schnetpack_hessian.evaluation.report import METRIC_DIMENSIONS
from schnetpack_hessian.evaluation.tssearch import TSSearchSettings
from schnetpack_hessian.quantities import Dimension

__all__ = [
    "METRICS",
    "STUDY_UNITS",
    "TEST_SETS",
    "TS_SETTINGS",
    "ENDPOINT_TS_SETTINGS",
    "flat_metrics",
    "score_run",
]

#: The test sets of a run.
TEST_SETS = ("train_offpath", "heldout")

#: TS searches of a study run: one seeded 0.1 Å-RMS perturbation of each held-out
#: reference TS, searched with the model Hessian (the goal's method), at most 50 steps.
#: Far fewer than ``spkhess-eval``'s defaults (three perturbations and two IRC starts,
#: both methods, 200 steps), which cost over 10 CPU-minutes per run on the shipped set:
#: Sella's internal-coordinate step costs ~0.5 s on a 5-atom molecule (ten times the
#: model's Hessian), and a poorly curved model runs to the step limit.
TS_SETTINGS = TSSearchSettings(
    n_perturbations=1, irc_starts=False, max_steps=50, methods=("model_hessian",)
)

#: TS searches as users run them, for studies on large sets: from the reactant and
#: product of a seeded 12 held-out reactions per run (the same for every arm of a
#: fold), IDPP guess, both Sella methods, at most 50 steps, success only when the
#: model's IRC connects reactant and product; the perturbed reference TS (one start)
#: as the second protocol.
ENDPOINT_TS_SETTINGS = TSSearchSettings(
    n_perturbations=1,
    irc_starts=False,
    max_steps=50,
    endpoint_starts=True,
    max_reactions=12,
)

#: The unit system of the study's records and tables.
STUDY_UNITS = "kcal/mol"

_LABELS: Dict[str, str] = {
    "energy_mae": "energy MAE",
    "forces_mae": "force MAE",
    "hessian_mae": "Hessian MAE",
    "frequency_mae": "frequency MAE",
    "imaginary_count_accuracy": "imag.-mode count accuracy",
    "barrier_fwd_mae": "forward barrier MAE",
    "ts_success_model_hessian": "TS-search success (model Hessian)",
    "ts_success_sella_updates": "TS-search success (Sella updates)",
    "ts_success_endpoints_model_hessian": "TS success from end points (model Hessian)",
    "ts_success_endpoints_sella_updates": "TS success from end points (Sella updates)",
    "ts_steps_endpoints_model_hessian": "median steps from end points (model Hessian)",
    "ts_steps_endpoints_sella_updates": "median steps from end points (Sella updates)",
}

#: Metric → (label, unit symbol in :data:`STUDY_UNITS`); the report's columns. The
#: unit is the metric's declared dimension (TS rates and step counts have none: "1").
METRICS: Dict[str, tuple] = {
    key: (
        label,
        METRIC_DIMENSIONS.get(key, Dimension.DIMENSIONLESS).unit(STUDY_UNITS).symbol,
    )
    for key, label in _LABELS.items()
}


def flat_metrics(report: DownstreamReport) -> Dict[str, float]:
    """The :data:`METRICS` of one evaluation in :data:`STUDY_UNITS` (NaN-free: absent
    metrics are left out), with the TS searches' counts, rates and RMSDs (Å)."""
    pooled = report.pooled["all"]
    out = {k: pooled[k].to(STUDY_UNITS) for k in METRICS if k in pooled}
    if report.barrier_stats.get("n_reactions"):
        out["barrier_fwd_mae"] = report.barrier_stats["barrier_fwd_mae"].to(STUDY_UNITS)
    for method, summary in report.ts_summary.items():
        out[f"ts_success_{method}"] = float(summary["success_rate"])
        out[f"ts_steps_{method}"] = float(summary["median_steps"])
        out[f"ts_calls_{method}"] = float(summary["median_force_calls"])
        out[f"ts_saddle_rate_{method}"] = float(summary["saddle_rate"])
        out[f"ts_saddle_rmsd_{method}"] = float(summary["median_saddle_rmsd"])
    out["n_structures"] = float(len(report.rows))
    return {k: v for k, v in out.items() if v == v}


def score_run(
    run_dir: Path,
    test_sets: Dict[str, Sequence[HessianRecord]],
    ts_settings: Optional[TSSearchSettings],
    device: str = "cpu",
    reaction_names: Optional[Dict[int, str]] = None,
) -> Dict[str, Dict[str, float]]:
    """``{test set: flat metrics}`` of the ``best_model`` in ``run_dir``.

    Args:
        run_dir: spktrain's run directory.
        test_sets: reference records (ASE units) per test set.
        ts_settings: TS searches on sets that hold reference transition states
            (``None``: none).
        device: torch device of the evaluation.
    """
    model = load_model(run_dir, device=device, name=Path(run_dir).name)
    out = {}
    for name, structures in test_sets.items():
        if not structures:
            continue
        report = evaluate_downstream(
            model,
            structures,
            data_name=name,
            reaction_names=reaction_names,
            ts_settings=ts_settings,
        )
        out[name] = flat_metrics(report)
    return out
