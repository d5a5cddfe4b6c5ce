"""``spkhess-convert``: external Hessian data → training files (``.h5`` / ``.db``).

Examples::

    spkhess-convert molecules-RTP.h5 molecules-IRC.h5 molecules-NMS.h5 -o openreact.h5
    spkhess-convert horm/train.lmdb -o horm.h5 --energy-key ae --float32
    spkhess-convert frames.xyz -o data.db --energy-unit eV --distance-unit Ang
    spkhess-convert data.h5 -o deepmd_out --output-format deepmd
    spkhess-convert --check data.h5
"""

import argparse
import json
import logging
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from schnetpack_hessian import properties as P
from schnetpack_hessian.convert import READERS, WRITERS, check, convert
from schnetpack_hessian.convert.base import Option
from schnetpack_hessian.data.physics import PHYSICS_RTOL, PhysicsCheck
from schnetpack_hessian.data.validation import SYMMETRY_RTOL, HessianDataError
from schnetpack_hessian.processes import run_cli

__all__ = ["build_parser", "run", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spkhess-convert``."""
    p = argparse.ArgumentParser(
        prog="spkhess-convert",
        description="Convert Hessian data sets to SchNetPack training files "
        "(.h5 / .db; also deepmd-kit folders and extxyz).",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="input files or folders")
    p.add_argument("-o", "--output", help="output: .h5, .db, .xyz or a folder (deepmd)")
    p.add_argument(
        "--format", choices=list(READERS), help="input format (default: guessed)"
    )
    p.add_argument(
        "--output-format",
        choices=["training", *WRITERS],
        help="output format (default: from the suffix)",
    )
    p.add_argument(
        "--energy-unit", help="energy unit of inputs that do not fix it (extxyz)"
    )
    p.add_argument("--distance-unit", help="distance unit of inputs that do not fix it")
    p.add_argument(
        "--kind", choices=list(P.KINDS), help="set the kind label of every structure"
    )
    for name, declared in _format_options().items():
        choices = {o.choices for _, o in declared}
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            choices=(
                list(choices.pop())
                if len(choices) == 1 and None not in choices
                else None
            ),
            help="; ".join(
                f"{fmt}: {o.help} (default {o.default})" for fmt, o in declared
            ),
        )
    p.add_argument("--symmetrize", action="store_true", help="store (H + H^T)/2")
    p.add_argument(
        "--physics",
        choices=["error", "warn", "off"],
        default="error",
        help="sum rules (sum_j H_ij = 0, H (w x r) = w x g with the stored forces) and "
        "plausible force constants: stop at the first failure (default), warn, or off",
    )
    p.add_argument(
        "--physics-rtol",
        type=float,
        default=PHYSICS_RTOL,
        help=f"tolerance of the sum rules (relative residual, default {PHYSICS_RTOL:g})",
    )
    p.add_argument(
        "--rtol",
        type=float,
        default=SYMMETRY_RTOL,
        help=f"symmetry tolerance max|H-H^T|/max|H| (default {SYMMETRY_RTOL:g})",
    )
    p.add_argument(
        "--float32",
        action="store_true",
        help=".h5: store forces and Hessians as float32",
    )
    p.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra metadata, e.g. level_of_theory=wB97X-D/6-31G(d)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing output"
    )
    p.add_argument(
        "--mkdir", action="store_true", help="create a missing output directory"
    )
    p.add_argument(
        "--check", metavar="FILE", nargs="+", help="validate FILE(s), write nothing"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _format_options() -> Dict[str, List[Tuple[str, Option]]]:
    """Every option a format declares, with the formats that take it."""
    out: Dict[str, List[Tuple[str, Option]]] = {}
    for fmt, reader in READERS.items():
        for name, option in reader.options.items():
            out.setdefault(name, []).append((fmt, option))
    return out


def _reader_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The options given on the command line (the format checks that it takes them)."""
    names = ["energy_unit", "distance_unit", "kind", *_format_options()]
    opts = {name: getattr(args, name) for name in names}
    return {k: v for k, v in opts.items() if v is not None}


def _metadata(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise HessianDataError(f"--metadata expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = value
    return out


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Run a parsed command line; returns the report (also printed by :func:`main`).

    Raises:
        HessianDataError: any data problem (file, structure index and problem named).
        FileExistsError: the output exists and ``--overwrite`` is not given.
    """
    progress = not args.quiet
    physics = PhysicsCheck(args.physics, args.physics_rtol)
    if args.check:
        return check(
            args.check,
            args.format,
            rtol=args.rtol,
            progress=progress,
            physics=physics,
            **_reader_options(args),
        )
    if not args.inputs or not args.output:
        raise HessianDataError("give INPUT... and -o OUTPUT (or --check FILE)")
    report = convert(
        args.inputs,
        args.output,
        fmt=args.format,
        out_format=args.output_format,
        overwrite=args.overwrite,
        symmetrize=args.symmetrize,
        rtol=args.rtol,
        precision="float32" if args.float32 else "float64",
        metadata=_metadata(args.metadata),
        progress=progress,
        physics=physics,
        mkdir=args.mkdir,
        **_reader_options(args),
    )
    return {"output": str(args.output), **report.as_dict()}


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point: parse, run, print the report; exit 1 on data errors,
    on a refused or unwritable output and on a full disk (one sentence each), 130
    on Ctrl-C and 143 on SIGTERM (partial outputs removed)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)

    def body() -> int:
        print(json.dumps(run(args), indent=2, default=str))
        return 0

    return run_cli("spkhess-convert", body, (HessianDataError,))


if __name__ == "__main__":
    sys.exit(main())
