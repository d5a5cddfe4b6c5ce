"""Plots of one or several models' evaluations (matplotlib, PNG, study units).

Every function takes a list of :class:`~.downstream.DownstreamReport` so that
``--compare`` draws several models in the same axes, and returns the file it wrote.
"""

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from schnetpack_hessian.evaluation.downstream import DownstreamReport
from schnetpack_hessian.evaluation.tssearch import METHODS
from schnetpack_hessian.quantities import Dimension

__all__ = ["write_plots"]

_KCAL = 1.0 / Dimension.ENERGY.factor("kcal/mol")  # eV per kcal/mol
_MAX_POINTS = 20000


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path, dpi: int) -> Path:
    """Lay out, write and close ``fig``; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _relative_energies(report: DownstreamReport):
    """Reference and model energies relative to the mean of their reaction (or
    formula, for unlabelled structures), kcal/mol."""
    groups: Dict[str, List[int]] = {}
    for i, row in enumerate(report.rows):
        key = f"r{row['reaction']}" if row["reaction"] >= 0 else str(row["formula"])
        groups.setdefault(key, []).append(i)
    ref = np.array([r["energy_ref"] for r in report.rows])
    mod = np.array([r["energy_model"] for r in report.rows])
    for idx in groups.values():
        ref[idx] -= ref[idx].mean()
        mod[idx] -= mod[idx].mean()
    return ref / _KCAL, mod / _KCAL


def _subsample(x: np.ndarray, y: np.ndarray, seed: int = 0):
    if len(x) <= _MAX_POINTS:
        return x, y
    keep = np.random.default_rng(seed).choice(len(x), _MAX_POINTS, replace=False)
    return x[keep], y[keep]


def _hessian_entries(report: DownstreamReport):
    ref, mod = [], []
    for record, pred in zip(report.structures, report.predictions):
        h = record.hessian
        if h is not None and pred.hessian is not None:
            ref.append(h.ravel())
            mod.append(pred.hessian.ravel())
    if not ref:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ref) / _KCAL, np.concatenate(mod) / _KCAL


def _parity(ax, pairs, label: str):
    lo, hi = np.inf, -np.inf
    for name, (x, y) in pairs.items():
        x, y = _subsample(x, y)
        ax.scatter(x, y, s=4, alpha=0.5, label=name)
        if len(x):
            lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(f"reference {label}")
    ax.set_ylabel(f"model {label}")


def parity_plot(reports: Sequence[DownstreamReport], path: Path) -> Path:
    """Energy (relative within each reaction), force and Hessian parity."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    energies = {r.model: _relative_energies(r) for r in reports}
    forces = {
        r.model: (
            np.concatenate([s.forces.ravel() for s in r.structures]) / _KCAL,
            np.concatenate([p.forces.ravel() for p in r.predictions]) / _KCAL,
        )
        for r in reports
    }
    hessians = {r.model: _hessian_entries(r) for r in reports}
    _parity(axes[0], energies, "ΔE (kcal/mol)")
    _parity(axes[1], forces, "F (kcal/mol/Å)")
    _parity(axes[2], hessians, "H (kcal/mol/Å²)")
    axes[0].set_title("energy (relative to reaction mean)")
    axes[1].set_title("force components")
    axes[2].set_title("Hessian entries")
    axes[0].legend(fontsize=8, markerscale=3)
    return _save(plt, fig, path, 110)


def hessian_error_histogram(reports: Sequence[DownstreamReport], path: Path) -> Path:
    """Histogram of |ΔH| per entry (log scale)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in reports:
        ref, mod = _hessian_entries(r)
        err = np.abs(mod - ref)
        err = err[err > 0]
        if len(err):
            bins = np.logspace(np.log10(err.min()), np.log10(err.max()), 60)
            ax.hist(err, bins=bins, histtype="step", lw=1.5, label=r.model)
    ax.set_xscale("log")
    ax.set_xlabel("|H_model − H_ref| per entry (kcal/mol/Å²)")
    ax.set_ylabel("entries")
    ax.legend(fontsize=8)
    return _save(plt, fig, path, 110)


def frequency_scatter(reports: Sequence[DownstreamReport], path: Path) -> Path:
    """Model vs reference harmonic wavenumbers (imaginary negative), all modes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    pairs = {
        r.model: (
            np.concatenate(
                [c.frequencies_ref for c in r.comparisons.values()] or [np.zeros(0)]
            ),
            np.concatenate(
                [c.frequencies_model for c in r.comparisons.values()] or [np.zeros(0)]
            ),
        )
        for r in reports
    }
    _parity(ax, pairs, "ν̃ (cm⁻¹)")
    ax.set_title("harmonic frequencies (imaginary < 0)")
    ax.legend(fontsize=8, markerscale=3)
    return _save(plt, fig, path, 110)


def eigenvalue_spectra(reports: Sequence[DownstreamReport], path: Path) -> Path:
    """Distribution of Cartesian Hessian eigenvalues, reference and models."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    first = next((r for r in reports if r.comparisons), None)
    if first is not None:
        ref = np.concatenate([c.eigenvalues_ref for c in first.comparisons.values()])
        models = {
            r.model: np.concatenate(
                [c.eigenvalues_model for c in r.comparisons.values()]
            )
            for r in reports
            if r.comparisons
        }
        values = np.concatenate([ref, *models.values()]) / _KCAL
        bins = np.linspace(values.min(), values.max(), 80)
        ax.hist(
            ref / _KCAL,
            bins=bins,
            histtype="stepfilled",
            alpha=0.3,
            color="k",
            label="reference",
        )
        for name, mod in models.items():
            ax.hist(mod / _KCAL, bins=bins, histtype="step", lw=1.5, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("Hessian eigenvalue (kcal/mol/Å²)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    return _save(plt, fig, path, 110)


def irc_profiles(reports: Sequence[DownstreamReport], path: Path) -> Path:
    """Energy along each reaction path, reference and every model."""
    plt = _pyplot()
    reactions = sorted({p.reaction for r in reports for p in r.profiles})
    n = max(len(reactions), 1)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False
    )
    for ax, rid in zip(axes.ravel(), reactions):
        drawn_ref = False
        title = f"reaction {rid}"
        for r in reports:
            prof = next((p for p in r.profiles if p.reaction == rid), None)
            if prof is None:
                continue
            if not drawn_ref:
                ax.plot(prof.xi, prof.ref / _KCAL, "k-o", ms=3, label="reference")
                if prof.ts_position >= 0:
                    ax.axvline(prof.xi[prof.ts_position], color="0.7", lw=0.8)
                drawn_ref = True
            ax.plot(prof.xi, prof.model / _KCAL, "-o", ms=3, label=r.model)
            title = prof.name or title
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("ξ (reactant → product)", fontsize=8)
        ax.set_ylabel("E − E_R (kcal/mol)", fontsize=8)
    for ax in axes.ravel()[len(reactions) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    return _save(plt, fig, path, 100)


def ts_success_bars(reports: Sequence[DownstreamReport], path: Path) -> Path:
    """TS-search success rate per model and method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(reports), 4))
    width = 0.8 / len(METHODS)
    x = np.arange(len(reports))
    for k, method in enumerate(METHODS):
        rates = [
            r.ts_summary.get(method, {}).get("success_rate", np.nan) for r in reports
        ]
        ax.bar(x + (k - (len(METHODS) - 1) / 2) * width, rates, width, label=method)
    ax.set_xticks(x)
    ax.set_xticklabels([r.model for r in reports], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("TS-search success rate")
    ax.legend(fontsize=8)
    return _save(plt, fig, path, 110)


def write_plots(reports: Sequence[DownstreamReport], out_dir: Path) -> Dict[str, str]:
    """Every plot that the data supports; returns title → file name."""
    plots = {
        "Parity (energy, forces, Hessian)": parity_plot(reports, out_dir / "parity.png")
    }
    if any(r.comparisons for r in reports):
        plots["Hessian-error histogram"] = hessian_error_histogram(
            reports, out_dir / "hessian_error_hist.png"
        )
        plots["Harmonic frequencies"] = frequency_scatter(
            reports, out_dir / "frequencies.png"
        )
        plots["Eigenvalue spectra"] = eigenvalue_spectra(
            reports, out_dir / "eigenvalues.png"
        )
    if any(r.profiles for r in reports):
        plots["IRC energy profiles"] = irc_profiles(
            reports, out_dir / "irc_profiles.png"
        )
    if any(r.ts_summary for r in reports):
        plots["TS-search success"] = ts_success_bars(reports, out_dir / "ts_search.png")
    return {title: Path(p).name for title, p in plots.items()}
