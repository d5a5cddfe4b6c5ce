"""``spkhess-bench``: speed and memory of Hessian training (see :mod:`..bench`)."""

import argparse
import json
import sys
from typing import List, Optional

from schnetpack_hessian.files import atomic_write_bytes, check_output
from schnetpack_hessian.processes import run_cli

__all__ = ["main", "run", "run_epochs", "run_device_check", "check_outputs", "parser"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spkhess-bench",
        description="Time training steps (E+F, HVP, rows, full Hessian, SchNetPack "
        "Response) and Hessian inference; report the ratios.",
    )
    p.add_argument(
        "--quick", action="store_true",
        help="PaiNN, one batch: about a minute (with --check: a CI-sized check)",
    )  # fmt: skip
    p.add_argument(
        "--check", action="store_true",
        help="instead: check the device (float64 Hessian against finite differences, "
        "memory-bounded against keep-all gradients, 20 training steps of full / HVP / "
        "rows with their host synchronisations, two-rank DDP on two GPUs); --json "
        "writes the report, exit 1 when a check fails",
    )  # fmt: skip
    p.add_argument(
        "--json", metavar="FILE", help="write every figure and the ratios here"
    )
    p.add_argument(
        "--device", default=None, help="cpu or cuda (default: cuda if available)"
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument(
        "--representations", nargs="+", default=None, choices=["painn", "schnet"],
        help="models to benchmark (default: painn with --quick, else painn schnet)",
    )  # fmt: skip
    p.add_argument(
        "--epochs", metavar="DATA",
        help="instead: time training epochs of the study recipe on DATA (shipped, xtb "
        "or a path): E+F, E+F+H full and HVP k=2, plain shuffling vs size buckets",
    )  # fmt: skip
    p.add_argument(
        "--fraction", type=float, default=1.0,
        help="--epochs: fraction of the training critical points (default 1)",
    )  # fmt: skip
    p.add_argument(
        "--n-epochs", type=int, default=4,
        help="--epochs: epochs per run; the median of epochs 2..n is reported",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=1, help="--epochs: OMP threads of each training"
    )
    p.add_argument(
        "--batch-size", type=int,
        help="--epochs: training batch size (default: the study recipe's)",
    )  # fmt: skip
    p.add_argument(
        "--modes", nargs="+", metavar="MODE",
        help="--epochs: Hessian modes timed, 'none' for E+F (default: none full "
        "hvp-k2)",
    )  # fmt: skip
    p.add_argument(
        "--plain-only", action="store_true",
        help="--epochs: plain shuffling only (no size-bucket runs)",
    )  # fmt: skip
    p.add_argument(
        "-o", "--output", default="spkhess_epoch_bench",
        help="--epochs: directory of the runs (a finished run is not rerun)",
    )  # fmt: skip
    p.add_argument(
        "--worker", nargs=2, metavar=("WHAT", "CONFIG"), help=argparse.SUPPRESS
    )
    return p


def run_epochs(args: argparse.Namespace) -> dict:
    """``--epochs DATA``: the epoch-time table of the study recipe on DATA."""
    from dataclasses import asdict, replace

    from schnetpack_hessian.cli.study import resolve_data
    from schnetpack_hessian.study.epochs import (
        EPOCH_ARMS,
        epoch_table,
        full_hessian_passes,
        time_epochs,
        train_indices,
    )
    from schnetpack_hessian.study.matrix import HESSIAN_MODES, Arm, Budget

    from schnetpack_hessian.study.runner import load_study_data

    budget = Budget()
    if args.batch_size is not None:
        budget = replace(budget, batch_size=args.batch_size)
    arms = EPOCH_ARMS
    if args.modes:
        unknown = sorted(set(args.modes) - set(HESSIAN_MODES))
        if unknown:
            raise SystemExit(
                f"spkhess-bench: --modes {unknown}: not in {list(HESSIAN_MODES)}"
            )
        arms = tuple(Arm("EF" if m == "none" else "EFH", hessian=m) for m in args.modes)
    path, label = resolve_data(args.epochs)
    data = load_study_data(path)
    rows = time_epochs(
        data,
        args.output,
        arms=arms,
        buckets=(None,) if args.plain_only else (None, 1),
        n_epochs=args.n_epochs,
        fraction=args.fraction,
        threads=args.threads,
        device=args.device or "cpu",
        budget=budget,
    )
    print(f"{label}: {rows[0].n_train} training structures, {rows[0].n_batches} "
          f"batches per epoch, {args.threads} thread(s)")  # fmt: skip
    sizes = [data.structures[i].n_atoms for i in train_indices(data, args.fraction)]
    passes = {
        (w, a): full_hessian_passes(sizes, budget.batch_size, w, atom_weighted=a)
        for w in (None, 1)
        for a in (False, True)
    }
    for weighted, what in ((False, "seeded passes"), (True, "atom-passes")):
        plain, bucketed = passes[None, weighted], passes[1, weighted]
        print(
            f"full-Hessian {what} per epoch: plain {plain:.0f}, size buckets "
            f"{bucketed:.0f} ({bucketed / plain:.2f} of plain)"
        )
    print("training CPU seconds per epoch (median of epochs 2..n):")
    print(epoch_table(rows, "cpu_seconds"))
    print("training wall seconds per epoch (median of epochs 2..n):")
    print(epoch_table(rows, "seconds"))
    report = {
        "data": str(path),
        "rows": [asdict(r) for r in rows],
        "full_hessian_passes": {
            "plain": passes[None, False],
            "buckets1": passes[1, False],
        },
        "full_hessian_atom_passes": {
            "plain": passes[None, True],
            "buckets1": passes[1, True],
        },
    }
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
    return report


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse ``--json`` / ``-o`` paths that could not be written, before the
    benchmark runs (a missing directory of ``--json`` is created at the end).

    Raises:
        OutputPathError: option, path and problem named.
    """
    if args.json:
        check_output(args.json, "--json", (".json",))
    if args.epochs:
        check_output(args.output, "-o", directory=True)


def run_device_check(args: argparse.Namespace) -> dict:
    """``--check``: the device check (:mod:`schnetpack_hessian.devicecheck`)."""
    import torch

    from schnetpack_hessian.devicecheck import run_check

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"spkhess-bench: --device {device}: no CUDA device found")
    report = run_check(device, size="ci" if args.quick else "full")
    print(
        f"device check on {report['device']}: "
        f"{'passed' if report['passed'] else 'FAILED'} in {report['seconds']:.0f} s"
    )
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
    return report


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark described by parsed arguments; returns the report."""
    import torch

    if args.epochs:
        return run_epochs(args)
    if args.check:
        return run_device_check(args)

    from schnetpack_hessian.bench import (
        BenchConfig,
        run_suite,
        time_inference,
        time_training_step,
    )

    if args.worker:
        what, config = args.worker
        cfg = BenchConfig(**json.loads(config))
        result = time_training_step(cfg) if what == "train" else time_inference(cfg)
        print(json.dumps(result))
        return result
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    reps = args.representations or (["painn"] if args.quick else ["painn", "schnet"])
    report = run_suite(
        args.quick, device=device, dtype=args.dtype, representations=reps
    )
    print("ratios:")
    for key, value in report["ratios"].items():
        print(f"  {key:24s} {'n/a' if value is None else f'{value:.2f}'}")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
    return report


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point: outputs checked first, then :func:`run`; a bad output
    path is one sentence (exit 1), Ctrl-C exits 130 and SIGTERM 143."""
    args = parser().parse_args(argv)

    def body() -> int:
        check_outputs(args)
        report = run(args)
        return 1 if args.check and not report["passed"] else 0

    return run_cli("spkhess-bench", body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
