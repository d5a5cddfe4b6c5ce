"""``spkhess-eval``: what a trained model buys downstream, measured on a data set.

Examples::

    spkhess-eval runs/<id>/best_model data.h5 -o eval/
    spkhess-eval runs/<id> data.h5 --kinds ts irc --skip-ts-search
    spkhess-eval --compare runs/ef runs/efh data.h5 -o compare/

Writes ``metrics.json``, ``structures.csv``, ``ts_searches.csv``, PNG plots and
``report.md`` to the output directory and prints the summary table.
"""

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from schnetpack_hessian import properties as P
from schnetpack_hessian.convert import READERS, ConversionError
from schnetpack_hessian.data.validation import HessianDataError
from schnetpack_hessian.evaluation.data import load_structures
from schnetpack_hessian.evaluation.downstream import evaluate_downstream
from schnetpack_hessian.evaluation.model import (
    MODEL_FILE,
    EvaluationError,
    load_model,
)
from schnetpack_hessian.evaluation.plots import write_plots
from schnetpack_hessian.evaluation.report import (
    group_table,
    summary_table,
    write_metrics,
    write_report_md,
    write_structures_csv,
)
from schnetpack_hessian.evaluation.spectra import IMAG_THRESHOLD
from schnetpack_hessian.evaluation.tssearch import TSSearchSettings
from schnetpack_hessian.files import check_output, staged_directory
from schnetpack_hessian.processes import run_cli

__all__ = ["build_parser", "run", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spkhess-eval``."""
    p = argparse.ArgumentParser(
        prog="spkhess-eval",
        description="Evaluate trained models on a Hessian data set: E/F/H errors, "
        "barriers, frequencies, imaginary modes, IRC profiles and TS searches.",
        epilog="A model file (spktrain's best_model) is a pickled Python object: "
        "loading it runs code from the file. Evaluate only model files you made or "
        "trust; data files are never executed.",
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="MODEL DATA",
        help="a model (spktrain's best_model, a .pt/.pth file, or its run directory) "
        "followed by data files of one format; with --compare, only the data files",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="MODEL",
        help="evaluate several models side by side (named after their run directories)",
    )
    p.add_argument(
        "--groups",
        nargs="+",
        metavar="NAME=MODEL,MODEL",
        help="also report mean ± sd over groups of the compared models (e.g. seeds): "
        "ef=ef,ef_s2,ef_s3 efh=efh,efh_s2",
    )
    p.add_argument("-o", "--output", default="eval", help="output directory")
    p.add_argument("--format", choices=list(READERS), help="data format (guessed)")
    p.add_argument(
        "--kinds", nargs="+", choices=list(P.KINDS), help="kinds to evaluate"
    )
    p.add_argument("--max-structures", type=int, help="evaluate at most this many")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--skip-ts-search", action="store_true", help="no TS searches")
    p.add_argument("--energy-unit", help="model energy unit if no config.yaml says it")
    p.add_argument("--distance-unit", help="model distance unit (default from config)")
    p.add_argument("--cutoff", type=float, help="neighbour-list cutoff of the model")
    p.add_argument("--data-energy-unit", help="energy unit of data that do not fix it")
    p.add_argument("--data-distance-unit", help="distance unit of such data")
    p.add_argument("--batch-size", type=int, default=16, help="structures per call")
    p.add_argument(
        "--imag-threshold",
        type=float,
        default=IMAG_THRESHOLD,
        help="cm^-1 below which an imaginary mode is noise (default %(default)s)",
    )
    d = TSSearchSettings()
    p.add_argument("--ts-perturbations", type=int, default=d.n_perturbations)
    p.add_argument("--ts-perturbation-rms", type=float, default=d.perturbation_rms)
    p.add_argument("--no-irc-starts", action="store_true", help="no IRC-point starts")
    p.add_argument("--ts-fmax", type=float, default=d.fmax, help="eV/Å")
    p.add_argument("--ts-steps", type=int, default=d.max_steps)
    p.add_argument(
        "--ts-rmsd",
        type=float,
        default=d.rmsd_threshold,
        help="Å from the reference TS for a success (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="perturbation seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


_MODEL_SUFFIXES = (".pt", ".pth", ".model")


def is_model_path(path: str) -> bool:
    """A run directory holding ``best_model``, a ``best_model`` file or a ``.pt``,
    ``.pth`` or ``.model`` file."""
    p = Path(path)
    if p.is_dir():
        return (p / MODEL_FILE).exists()
    return p.name == MODEL_FILE or p.suffix in _MODEL_SUFFIXES


def split_models_and_data(
    paths: Sequence[str], compare: Optional[Sequence[str]]
) -> Tuple[List[str], List[str]]:
    """``(models, data files)`` from the positional arguments and ``--compare``.

    Without ``--compare`` the first positional argument is the model.  With it,
    ``--compare A B DATA`` and ``MODEL DATA --compare B`` both work: data files at the
    end of the ``--compare`` list and models at the start of the positional list are
    moved to where they belong.
    """
    paths = list(paths)
    models = list(compare or [])
    if compare:
        while len(models) > 1 and not is_model_path(models[-1]):
            paths.insert(0, models.pop())
        if paths and is_model_path(paths[0]):
            models.insert(0, paths.pop(0))
    elif paths:
        models.append(paths.pop(0))
    if not models:
        raise EvaluationError("no model given (usage: spkhess-eval MODEL DATA)")
    if not paths:
        raise EvaluationError("no data file given (usage: spkhess-eval MODEL DATA)")
    return models, paths


def _unique_names(models: Sequence[str]) -> List[str]:
    names = []
    for m in models:
        p = Path(m)
        name = p.name if p.is_dir() else (p.parent.name or p.name)
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _write_ts_csv(path: Path, reports) -> None:
    with open(path, "w", newline="") as f:
        writer = None
        for report in reports:
            for result in report.ts_results:
                row = {"model": report.model, **result.as_row()}
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)


def parse_groups(specs: Optional[Sequence[str]]) -> Dict[str, List[str]]:
    """``["ef=a,b", ...]`` → ``{"ef": ["a", "b"], ...}``.

    Raises:
        EvaluationError: a spec without ``=`` or without members.
    """
    groups: Dict[str, List[str]] = {}
    for spec in specs or []:
        name, sep, members = spec.partition("=")
        names = [m for m in members.split(",") if m]
        if not sep or not name or not names:
            raise EvaluationError(
                f"--groups {spec!r}: expected NAME=MODEL,MODEL (model names as in the "
                "table)"
            )
        groups[name] = names
    return groups


def run(args: argparse.Namespace) -> int:
    """Evaluate, write every output file, print the table; returns the exit code.

    The output directory is checked first: a bad ``-o`` costs no evaluation.
    """
    out = check_output(args.output, "-o", directory=True)
    groups = parse_groups(args.groups)
    models, data = split_models_and_data(args.paths, args.compare)
    model_names = _unique_names(models)
    for group, members in groups.items():
        unknown = [m for m in members if m not in model_names]
        if unknown:
            raise EvaluationError(
                f"--groups {group}: {unknown} are not among the models {model_names}"
            )
    options = {}
    if args.data_energy_unit:
        options["energy_unit"] = args.data_energy_unit
    if args.data_distance_unit:
        options["distance_unit"] = args.data_distance_unit
    structures, reaction_names, source = load_structures(
        data, args.format, args.kinds, args.max_structures, **options
    )
    if not structures:
        raise EvaluationError(f"{source}: no structures to evaluate")
    if not any(r.hessian is not None for r in structures):
        print(f"note: {source} has no reference Hessians; Hessian metrics are skipped")
    progress = not args.no_progress
    ts_settings = None
    if not args.skip_ts_search:
        ts_settings = TSSearchSettings(
            n_perturbations=args.ts_perturbations,
            perturbation_rms=args.ts_perturbation_rms,
            irc_starts=not args.no_irc_starts,
            fmax=args.ts_fmax,
            max_steps=args.ts_steps,
            rmsd_threshold=args.ts_rmsd,
            imag_threshold=args.imag_threshold,
            seed=args.seed,
        )
    reports = []
    for path, name in zip(models, model_names):
        model = load_model(
            path,
            energy_unit=args.energy_unit,
            distance_unit=args.distance_unit,
            cutoff=args.cutoff,
            device=args.device,
            name=name,
        )
        reports.append(
            evaluate_downstream(
                model,
                structures,
                data_name=source,
                reaction_names=reaction_names,
                ts_settings=ts_settings,
                batch_size=args.batch_size,
                imag_threshold=args.imag_threshold,
                progress=progress,
            )
        )
    settings = {
        "data": ", ".join(str(d) for d in data),
        "models": {r.model: str(m) for r, m in zip(reports, models)},
        "n_structures": len(structures),
        "kinds": args.kinds,
        "max_structures": args.max_structures,
        "imag_threshold_cm-1": args.imag_threshold,
        "ts_search": None if ts_settings is None else vars(ts_settings).copy(),
        "ts_rmsd_threshold": (
            None if ts_settings is None else ts_settings.rmsd_threshold
        ),
    }
    # every file or none: a full disk or Ctrl-C leaves no half report in -o
    with staged_directory(out) as stage:
        write_metrics(stage / "metrics.json", reports, settings)
        write_structures_csv(stage / "structures.csv", reports)
        if ts_settings is not None:
            _write_ts_csv(stage / "ts_searches.csv", reports)
        grouped = group_table(reports, groups) if groups else ""
        plots = write_plots(reports, stage)
        write_report_md(stage / "report.md", reports, plots, settings, groups)
    print(summary_table(reports))
    if grouped:
        print("\nMean ± standard deviation over the models of each group:\n" + grouped)
    print(
        f"\nwritten to {out}/: metrics.json, structures.csv, report.md, "
        + ", ".join(plots.values())
    )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console-script entry point: a model, data or output problem is one sentence
    (exit 2), a failed write one naming the file (exit 1); Ctrl-C exits 130 and
    SIGTERM 143."""
    args = build_parser().parse_args(argv)
    return run_cli(
        "spkhess-eval",
        lambda: run(args),
        (EvaluationError, ConversionError, HessianDataError),
        error_code=2,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
