"""``spkhess-pretrain``: train a study recipe's model on every reaction and export it.

Examples::

    spkhess-pretrain --data xtb --preset cpu --targets EFH --name chon-xtb-efh -o pre
    spkhess-pretrain --data xtb --preset cpu --targets EF --name chon-xtb-ef -o pre

Trains PaiNN with the preset's budget on the critical points of all the set's
reactions (resumable), scores it on a subsample of the IRC/NMS structures, and writes
``NAME.pt`` (loads without pickle) and its model card ``NAME.md`` into
``--export-dir`` (default: the package's ``models/``, where ``pretrained:NAME``
finds it).
"""

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from schnetpack_hessian.cli.study import resolve_data
from schnetpack_hessian.pretrained import MODEL_DIR
from schnetpack_hessian.processes import run_cli
from schnetpack_hessian.study.matrix import MODELS, PRESETS, Arm
from schnetpack_hessian.study.pretrain import pretrain
from schnetpack_hessian.study.runner import StudyError, load_study_data

__all__ = ["build_parser", "run", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spkhess-pretrain``."""
    p = argparse.ArgumentParser(
        prog="spkhess-pretrain",
        description="Train a study preset's model on every reaction of a set, "
        "export it (weights-only) with its model card.",
    )
    p.add_argument("--data", default="xtb", help="shipped, xtb or a training file")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument(
        "--targets",
        choices=["EF", "EFH"],
        required=True,
        help="E+F, or E+F+H with the preset's Hessian mode",
    )
    p.add_argument("--model", default="painn", choices=sorted(MODELS))
    p.add_argument("--name", required=True, help="the model's name (pretrained:NAME)")
    p.add_argument("-o", "--output", required=True, help="training directory")
    p.add_argument(
        "--export-dir", default=str(MODEL_DIR), help="where NAME.pt / NAME.md go"
    )
    p.add_argument("--max-epochs", type=int, help="override the preset's epochs")
    p.add_argument("--n-atom-basis", type=int, help="override the features per atom")
    p.add_argument("--n-interactions", type=int, help="override the interactions")
    p.add_argument(
        "--score-per-set",
        type=int,
        help="IRC/NMS structures the card's errors are measured on (default: the "
        "preset's)",
    )
    p.add_argument("--threads", type=int, default=1, help="OMP threads (default 1)")
    p.add_argument("--device", default="cpu")
    return p


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Train (or resume), score, export; prints where the files went."""
    path, label = resolve_data(args.data)
    plan = PRESETS[args.preset]()
    changes = {
        k: getattr(args, k)
        for k in ("max_epochs", "n_atom_basis", "n_interactions", "score_per_set")
        if getattr(args, k) is not None
    }
    if changes:
        plan = plan.with_budget(**changes)
    hessian = "none" if args.targets == "EF" else plan.ts_hessian
    arm = Arm(args.targets, args.model, hessian)
    result = pretrain(
        plan,
        arm,
        load_study_data(path),
        label,
        args.name,
        Path(args.output),
        Path(args.export_dir),
        ["spkhess-pretrain", *argv],
        args.threads,
        args.device,
    )
    print(f"written {result.model} and {result.card}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console-script entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_cli(
        "spkhess-pretrain",
        lambda: run(args, argv),
        (StudyError, ValueError),
        error_code=2,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
