"""Writing evaluation results: ``metrics.json``, ``structures.csv``, tables, ``report.md``.

Numbers are computed in ASE units (eV, Å) and written in two unit systems: the
study's (kcal/mol, kcal/mol/Å, kcal/mol/Å²) and eV (eV, eV/Å, eV/Å²); frequencies
are in cm⁻¹, cosines and rates are dimensionless. Each physical number is a
:class:`~schnetpack_hessian.quantities.Quantity` and converts by its own dimension.
"""

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from schnetpack_hessian import markdown
from schnetpack_hessian.evaluation.downstream import DownstreamReport
from schnetpack_hessian.evaluation.reactions import (
    BARRIER_ROW,
    BARRIER_STATS,
    PROFILE_ROW,
    PROFILE_STATS,
)
from schnetpack_hessian.evaluation.structures import POOLED, STRUCTURE_ROW
from schnetpack_hessian.quantities import (
    UNIT_SYSTEMS,
    Dimension,
    Quantity,
    dimensions_of,
    in_units,
)

__all__ = [
    "UNIT_SYSTEMS",
    "METRIC_DIMENSIONS",
    "in_units",
    "metrics_dict",
    "write_metrics",
    "write_structures_csv",
    "summary_table",
    "group_table",
    "write_report_md",
]

#: Every dimensioned key the reports write and its dimension, as the rows and
#: statistics declare them (``metric_dimensions`` in ``metrics.json``).
METRIC_DIMENSIONS: Dict[str, Dimension] = dimensions_of(
    POOLED, STRUCTURE_ROW, BARRIER_ROW, BARRIER_STATS, PROFILE_STATS, PROFILE_ROW
)


def _finite(value: object) -> object:
    """JSON has no NaN: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _model_metrics(report: DownstreamReport) -> Dict[str, object]:
    profiles = [p.as_row() for p in report.profiles]
    base = {
        "pooled": report.pooled,
        "barriers": {"stats": report.barrier_stats, "reactions": report.barriers},
        "irc_profiles": {"stats": report.profile_stats, "reactions": profiles},
    }
    out: Dict[str, object] = {system: in_units(base, system) for system in UNIT_SYSTEMS}
    out["ts_search"] = {
        "summary": report.ts_summary,
        "searches": [r.as_row() for r in report.ts_results],
    }
    out["seconds"] = report.seconds
    out["has_hessians"] = report.has_hessians
    return out


def metrics_dict(
    reports: Sequence[DownstreamReport], settings: Mapping[str, object]
) -> Dict[str, object]:
    """The content of ``metrics.json``: units, settings and every model's numbers."""
    return _finite(
        {
            "units": {
                system: {dim.value: unit.label for dim, unit in table.items()}
                for system, table in UNIT_SYSTEMS.items()
            },
            "metric_dimensions": {k: d.value for k, d in METRIC_DIMENSIONS.items()},
            "settings": dict(settings),
            "models": {r.model: _model_metrics(r) for r in reports},
        }
    )


def write_metrics(
    path: Path, reports: Sequence[DownstreamReport], settings: Mapping[str, object]
) -> None:
    """Write ``metrics.json``."""
    path.write_text(json.dumps(metrics_dict(reports, settings), indent=2) + "\n")


def write_structures_csv(
    path: Path, reports: Sequence[DownstreamReport], system: str = "kcal/mol"
) -> None:
    """One row per structure and model; columns of quantities carry their unit."""
    keys: List[str] = []
    dims: Dict[str, Dimension] = {}
    for report in reports:
        for row in report.rows:
            keys += [k for k in row if k not in keys]
            for key, value in row.items():
                if isinstance(value, Quantity):
                    dims.setdefault(key, value.dimension)

    def header(key: str) -> str:
        dim = dims.get(key, Dimension.DIMENSIONLESS)
        if dim is Dimension.DIMENSIONLESS:
            return key
        return f"{key} ({dim.label(system)})"

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model"] + [header(k) for k in keys])
        for report in reports:
            for row in report.rows:
                conv = in_units(row, system)
                writer.writerow([report.model] + [_cell(conv.get(k, "")) for k in keys])


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return value


def _fmt(value: object, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_table(reports: Sequence[DownstreamReport], system: str = "kcal/mol") -> str:
    """Two Markdown tables: errors per kind, and barriers, IRC and TS search."""
    u = {dim.value: unit.label for dim, unit in UNIT_SYSTEMS[system].items()}
    head = (
        f"| model | set | n | E MAE ({u['energy']}) | F MAE ({u['force']}) | "
        f"H MAE ({u['hessian']}) | eigval MAE ({u['hessian']}) | ν MAE (cm⁻¹) | "
        "imag. count ok | TS-mode cos (mw) | ZPE MAE "
        f"({u['energy']}) |"
    )
    lines = [head, "|" + " --- |" * 11]
    for report in reports:
        sets = {"all": report.pooled["all"], **report.pooled["kind"]}
        for name, stats in sets.items():
            s = in_units(stats, system)
            lines.append(
                f"| {report.model} | {name} | {s['n_structures']} | "
                f"{_fmt(s.get('energy_mae'))} | {_fmt(s.get('forces_mae'))} | "
                f"{_fmt(s.get('hessian_mae'))} | {_fmt(s.get('eigenvalue_mae'))} | "
                f"{_fmt(s.get('frequency_mae'), 0)} | "
                f"{_fmt(s.get('imaginary_count_accuracy'))} | "
                f"{_fmt(s.get('lowest_mode_cosine_mw'))} | {_fmt(s.get('zpe_mae'))} |"
            )
    lines += [
        "",
        f"| model | barrier fwd MAE ({u['energy']}) | barrier rev MAE ({u['energy']}) | "
        f"IRC barrier MAE ({u['energy']}) | IRC max dev. ({u['energy']}) | "
        "IRC max at TS | TS success, model H / updates | "
        "saddle found, model H / updates | saddle RMSD (Å), model H / updates | "
        "median steps, model H / updates | median force calls, model H / updates |",
        "|" + " --- |" * 11,
    ]
    for report in reports:
        b = in_units(report.barrier_stats, system)
        p = in_units(report.profile_stats, system)
        ts = report.ts_summary
        mh, su = ts.get("model_hessian", {}), ts.get("sella_updates", {})
        lines.append(
            f"| {report.model} | {_fmt(b.get('barrier_fwd_mae'))} | "
            f"{_fmt(b.get('barrier_rev_mae'))} | {_fmt(p.get('irc_barrier_mae'))} | "
            f"{_fmt(p.get('irc_max_deviation_mean'))} | "
            f"{_fmt(p.get('irc_maximum_at_ts_rate'))} | "
            f"{_fmt(mh.get('success_rate'))} / {_fmt(su.get('success_rate'))} | "
            f"{_fmt(mh.get('saddle_rate'))} / {_fmt(su.get('saddle_rate'))} | "
            f"{_fmt(mh.get('median_saddle_rmsd'))} / "
            f"{_fmt(su.get('median_saddle_rmsd'))} | "
            f"{_fmt(mh.get('median_steps'), 0)} / {_fmt(su.get('median_steps'), 0)} | "
            f"{_fmt(mh.get('median_force_calls'), 0)} / "
            f"{_fmt(su.get('median_force_calls'), 0)} |"
        )
    return "\n".join(lines)


#: (label, where in a report) of the columns of :func:`group_table`; a column's unit
#: is its metric's declared dimension (:data:`METRIC_DIMENSIONS`; TS rates have none).
GROUP_COLUMNS = (
    ("E MAE IRC", ("pooled", "kind", "irc", "energy_mae")),
    ("F MAE IRC", ("pooled", "kind", "irc", "forces_mae")),
    ("H MAE IRC", ("pooled", "kind", "irc", "hessian_mae")),
    ("E MAE NMS", ("pooled", "kind", "nms", "energy_mae")),
    ("F MAE NMS", ("pooled", "kind", "nms", "forces_mae")),
    ("H MAE NMS", ("pooled", "kind", "nms", "hessian_mae")),
    ("ν MAE", ("pooled", "all", "frequency_mae")),
    ("imag. ok", ("pooled", "all", "imaginary_count_accuracy")),
    ("barrier fwd MAE", ("barrier_stats", "barrier_fwd_mae")),
    ("TS success, model H", ("ts_summary", "model_hessian", "success_rate")),
    ("TS success, updates", ("ts_summary", "sella_updates", "success_rate")),
)


def _lookup(report: DownstreamReport, path: Sequence[str], system: str) -> float:
    """The number at ``path`` in ``report``, in ``system`` (NaN where absent)."""
    value: object = getattr(report, path[0])
    for key in path[1:]:
        if not isinstance(value, Mapping) or key not in value:
            return float("nan")
        value = value[key]
    value = in_units(value, system)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def group_table(
    reports: Sequence[DownstreamReport],
    groups: Mapping[str, Sequence[str]],
    system: str = "kcal/mol",
) -> str:
    """Mean ± standard deviation over the models of each group (e.g. the seeds of one
    training recipe), as a Markdown table.

    Args:
        reports: the evaluated models.
        groups: group name → model names.
        system: unit system of the table.

    Raises:
        KeyError: a group names a model that was not evaluated.
    """
    by_name = {r.model: r for r in reports}
    dims = [
        METRIC_DIMENSIONS.get(path[-1], Dimension.DIMENSIONLESS)
        for _, path in GROUP_COLUMNS
    ]
    header = ["group", "n"] + [
        label if dim is Dimension.DIMENSIONLESS else f"{label} ({dim.label(system)})"
        for (label, _), dim in zip(GROUP_COLUMNS, dims)
    ]
    rows = []
    for name, members in groups.items():
        missing = [m for m in members if m not in by_name]
        if missing:
            raise KeyError(f"group {name!r}: no evaluated model named {missing}")
        cells = []
        for (_, path), dim in zip(GROUP_COLUMNS, dims):
            values = [_lookup(by_name[m], path, system) for m in members]
            finite = [v for v in values if math.isfinite(v)]
            if not finite:
                cells.append("–")
                continue
            mean = sum(finite) / len(finite)
            sd = (
                math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
                if len(finite) > 1
                else 0.0
            )
            digits = 0 if dim is Dimension.WAVENUMBER else 2
            cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f}")
        rows.append([name, len(members), *cells])
    return markdown.table(header, rows)


def write_report_md(
    path: Path,
    reports: Sequence[DownstreamReport],
    plots: Mapping[str, str],
    settings: Mapping[str, object],
    groups: Optional[Mapping[str, Sequence[str]]] = None,
) -> None:
    """``report.md``: the tables (and the group means with ``groups``), the settings
    and the plots embedded."""
    lines = [
        "# Model evaluation",
        "",
        f"Data: `{settings.get('data')}`; models: "
        + ", ".join(f"`{r.model}`" for r in reports)
        + ".",
        "",
        "Errors in the study's units (kcal/mol, kcal/mol/Å, kcal/mol/Å²); frequencies "
        "in cm⁻¹ after mass weighting and projection of translations and rotations, "
        "matched by order; 'imag. count ok' is the fraction of structures whose "
        "number of imaginary modes is right (0 for minima, 1 for TSs, the "
        "reference's count elsewhere). TS searches: Sella order 1 from perturbed "
        "reference TSs and the highest IRC points beside them; success = converged, "
        "one imaginary mode, RMSD to the reference TS below "
        f"{settings.get('ts_rmsd_threshold')} Å; 'saddle found' counts converged "
        "searches with one imaginary mode wherever they end, 'saddle RMSD' is their "
        "median distance to the reference TS; steps and force calls are medians over "
        "successful searches. All numbers are in `metrics.json`, per structure in "
        "`structures.csv`, per search in `ts_searches.csv`.",
        "",
        summary_table(reports),
        "",
        *(
            [
                "Mean ± standard deviation over the models of each group:",
                "",
                group_table(reports, groups),
                "",
            ]
            if groups
            else []
        ),
        "## Settings",
        "",
        "```json",
        json.dumps(_finite(dict(settings)), indent=2),
        "```",
        "",
        "## Plots",
        "",
    ]
    for title, file in plots.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    path.write_text("\n".join(lines))
