"""``spkhess-study``: the reference study's comparison, one command, resumable.

Examples::

    spkhess-study --data shipped --quick -o study_quick     # ≤ 30 min, 2-core CPU
    spkhess-study --data xtb --full -o study_full           # the whole matrix
    spkhess-study --data my_set.h5 --full -o study --device cuda

Runs every arm of the matrix one at a time with spktrain (``experiment=study_recipe``)
in ``DIR/runs/<arm>/``, scores it with ``spkhess-eval``'s library and writes
``DIR/RESULTS.md`` with tables, figures and the issue's goals.  A finished arm
(``result.json``) is never retrained: rerun the same command to continue.  Several
processes may share one ``DIR`` (e.g. two with ``--threads 1`` on a 2-core machine, or
one per GPU): each arm is locked while it runs, and the others skip it.
"""

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Tuple

from schnetpack_hessian.convert import ConversionError
from schnetpack_hessian.data.validation import HessianDataError
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.files import check_output
from schnetpack_hessian.processes import run_cli
from schnetpack_hessian.study.baselines import (
    harmonic_force_baseline,
    zero_force_baseline,
)
from schnetpack_hessian.study.matrix import PRESETS, StudyPlan, full_plan, quick_plan
from schnetpack_hessian.study.report import write_report
from schnetpack_hessian.study.runner import (
    StudyError,
    load_study_data,
    read_results,
    run_study,
)

__all__ = ["build_parser", "resolve_data", "make_plan", "run", "main"]

_BUDGET_OPTIONS = (
    "max_epochs",
    "patience",
    "lr_patience",
    "lr",
    "weight_decay",
    "gradient_clip",
    "val_per_reaction",
    "n_atom_basis",
    "n_interactions",
    "batch_size",
    "loss",
    "score_per_set",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spkhess-study``."""
    p = argparse.ArgumentParser(
        prog="spkhess-study",
        description="Train and compare E / E+F / E+H / E+F+H models the reference "
        "study's way (critical points train; IRC/NMS and held-out reactions test), "
        "resumably, and write DIR/RESULTS.md.",
    )
    p.add_argument(
        "--data",
        default="shipped",
        help="shipped (the wB97X set), xtb (the GFN2-xTB bulk set) or "
        "the path of a training file with reaction and kind labels",
    )
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument(
        "--quick",
        action="store_true",
        help="PaiNN, E+F vs E+F+H (full, HVP k=2, 25 %% data), 3 seeds",
    )
    size.add_argument("--full", action="store_true", help="the whole matrix")
    size.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named plan: cpu = E+F vs E+F+H (HVP k=2), PaiNN and SchNet, 100 and "
        "25 %% of the data, the full Hessian on one subset, larger batches and "
        "subsampled scoring (the bulk study within ~20 CPU-hours; docs/RESULTS.md)",
    )
    p.add_argument("-o", "--output", required=True, help="study directory")
    p.add_argument(
        "--replicates",
        type=int,
        help="runs per arm, run r with seed r+1 tested on fold r of N folds (every "
        "reaction tested once; --quick default 3); with --full instead of "
        "--seeds/--folds",
    )
    p.add_argument("--seeds", type=int, nargs="+", help="--full: seeds (default 1 2 3)")
    p.add_argument("--folds", type=int, help="--full: by-reaction folds (default 5)")
    p.add_argument(
        "--arms",
        nargs="+",
        metavar="GROUP",
        help="run only these arms (e.g. EF-painn-100pct)",
    )
    p.add_argument("--max-epochs", type=int, help="override the budget's epochs")
    p.add_argument("--patience", type=int, help="early-stopping patience, epochs")
    p.add_argument("--lr-patience", type=int, help="ReduceLROnPlateau patience, epochs")
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument(
        "--weight-decay", type=float, help="AdamW weight decay (default 0: none)"
    )
    p.add_argument(
        "--val-per-reaction",
        type=int,
        help="at most this many critical points of one training reaction validate "
        "(default 0: no limit)",
    )
    p.add_argument(
        "--no-ts-search",
        dest="ts_search",
        action="store_const",
        const=False,
        help="skip the TS searches in scoring (minutes per run on a CPU)",
    )
    p.add_argument(
        "--gradient-clip",
        type=float,
        help="clip the gradient norm to this value (default 0: no clipping)",
    )
    p.add_argument("--n-atom-basis", type=int, help="features per atom")
    p.add_argument("--n-interactions", type=int, help="message-passing layers")
    p.add_argument("--batch-size", type=int, help="training batch size")
    p.add_argument("--loss", help="loss preset: study, horm, hip, variance, default")
    p.add_argument(
        "--score-per-set",
        type=int,
        help="score each run on every critical point of a test set plus at most N "
        "other structures, stratified by reaction and kind (0: all)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        choices=[1, 2],
        help="OMP threads of the (single) training process (default 1)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--max-runs", type=int, help="train at most this many new runs, then report"
    )
    p.add_argument(
        "--report-only", action="store_true", help="write RESULTS.md, train nothing"
    )
    p.add_argument(
        "--train-only",
        action="store_true",
        help="train the arms but score none (a later run without it scores the "
        "finished trainings without retraining them)",
    )
    return p


def resolve_data(spec: str) -> Tuple[Path, str]:
    """``(path, label)`` of ``--data``.

    Raises:
        StudyError: the xtb set is not installed, or the path does not exist.
    """
    if spec == "shipped":
        path = reactive_set_path()
        return path, f"shipped wB97X/6-31G(d) set ({path.name})"
    if spec == "xtb":
        try:
            path = reactive_set_path("xtb")
        except FileNotFoundError as err:
            raise StudyError(
                "--data xtb: the GFN2-xTB bulk set is not installed yet "
                f"({err}). Run the study on the shipped set (--data shipped) or pass "
                "the path of a generated set (--data PATH)"
            ) from err
        return path, f"GFN2-xTB bulk set ({path.name})"
    path = Path(spec)
    if not path.exists():
        raise StudyError(f"--data {spec}: no such file (or use shipped / xtb)")
    return path, str(path)


def make_plan(args: argparse.Namespace) -> StudyPlan:
    """The plan of ``--quick`` / ``--full`` with the budget options applied."""
    if args.quick:
        plan = quick_plan(args.replicates or 3)
    elif args.preset:
        if args.seeds or args.folds:
            raise StudyError(
                f"--preset {args.preset}: --replicates, not --seeds/--folds"
            )
        plan = PRESETS[args.preset](args.replicates or 3)
    else:
        if args.replicates and (args.seeds or args.folds):
            raise StudyError("--full: --replicates or --seeds/--folds, not both")
        plan = full_plan(
            tuple(args.seeds or (1, 2, 3)), args.folds or 5, args.replicates
        )
    if args.arms:
        try:
            plan = plan.select(args.arms)
        except ValueError as err:
            raise StudyError(f"--arms: {err}") from err
    if args.ts_search is False:
        plan = replace(plan, ts_settings=None)
    changes = {
        k: getattr(args, k) for k in _BUDGET_OPTIONS if getattr(args, k) is not None
    }
    return plan.with_budget(**changes) if changes else plan


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run (or continue) the study and write its report; returns the exit code.

    ``-o`` is checked first: a file there, or a directory that cannot be created or
    written, costs no training.
    """
    check_output(args.output, "-o", directory=True)
    path, label = resolve_data(args.data)
    plan = make_plan(args)
    out = Path(args.output)
    data = load_study_data(path)
    if not args.report_only:
        run_study(
            plan,
            data,
            out,
            args.threads,
            args.device,
            max_runs=args.max_runs,
            score=not args.train_only,
        )
    if args.train_only:
        return 0
    command = shlex.join(["spkhess-study", *argv])
    folds = {a.fold for a in plan.arms}
    per_set = plan.budget.score_per_set
    try:
        zero_force = zero_force_baseline(data, plan.n_folds, folds, per_set)
        harmonic = harmonic_force_baseline(data, plan.n_folds, folds, per_set)
    except ValueError as err:  # a file without forces: no force references
        print(f"no force references in the report: {err}", file=sys.stderr)
        zero_force = harmonic = None
    report = write_report(
        plan,
        read_results(out),
        out,
        command,
        label,
        zero_force=zero_force,
        harmonic=harmonic,
    )
    print(f"written {report}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console-script entry point: exit 2 on a study, data or output problem (one
    sentence), 143 on SIGTERM and 130 on Ctrl-C after the running spktrain stopped
    (rerun the command to continue)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_cli(
        "spkhess-study",
        lambda: run(args, argv),
        (StudyError, ConversionError, HessianDataError),
        error_code=2,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
