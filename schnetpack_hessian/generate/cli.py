"""Command line of the generator (``data_scripts/generate_reactive_set.py``).

Sub-commands:

- ``run``: generate (or resume) the reactions of a YAML list, optionally one shard
  ``--shard I/N`` of it, then write the finished reactions to ``--out``;
- ``assemble``: write the finished reactions of one or more work directories;
- ``merge``: merge shard output files into one, ordered by reaction id.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from schnetpack_hessian.generate.calculators import MethodSpec
from schnetpack_hessian.generate.reactions import (
    load_reactions,
    parse_shard,
    select_shard,
)
from schnetpack_hessian.generate.store import read_json
from schnetpack_hessian.generate.workflow import (
    GenerationConfig,
    ReactionOutcome,
    assemble,
    dataset_metadata,
    generate,
    merge,
)

__all__ = ["build_parser", "run", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    p = argparse.ArgumentParser(
        prog="generate_reactive_set",
        description="Generate reactive critical-point data (minima, TS, IRC, "
        "normal-mode samples) with energies, forces and Hessians.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="generate or resume, then write --out")
    r.add_argument("--reactions", required=True, help="YAML reaction list")
    r.add_argument("--workdir", required=True, help="work directory (checkpoints)")
    r.add_argument("--out", help="output file (.h5 or .db); omit to only generate")
    r.add_argument("--shard", default="0/1", help="I/N: run shard I of N (0-based)")
    r.add_argument("--workers", type=int, default=1, help="parallel reactions")
    d = GenerationConfig()
    m = MethodSpec()
    r.add_argument("--program", default=m.program, choices=["pyscf", "tblite"])
    r.add_argument("--method", default=None, help="xc functional, 'hf' or GFN2-xTB")
    r.add_argument("--basis", default=m.basis)
    r.add_argument("--max-memory", type=int, default=m.max_memory, help="MB (pyscf)")
    r.add_argument("--grid-level", type=int, default=m.grid_level)
    r.add_argument("--n-irc", type=int, default=d.n_irc)
    r.add_argument("--n-nms-centres", type=int, default=d.n_nms_centres)
    r.add_argument("--n-nms-per-centre", type=int, default=d.n_nms_per_centre)
    r.add_argument("--temperature", type=float, default=d.temperature, help="K")
    r.add_argument("--seed", type=int, default=d.seed)
    r.add_argument("--irc-dx", type=float, default=d.irc_dx)
    r.add_argument("--irc-steps", type=int, default=d.irc_steps)
    r.add_argument("--irc-energy-tol", type=float, default=d.irc_energy_tol)
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--overwrite", action="store_true", help="replace --out")

    a = sub.add_parser("assemble", help="write finished reactions of work dirs")
    a.add_argument("workdirs", nargs="+")
    a.add_argument("--out", required=True)
    a.add_argument("--overwrite", action="store_true")

    g = sub.add_parser("merge", help="merge shard output files")
    g.add_argument("files", nargs="+")
    g.add_argument("--out", required=True)
    g.add_argument("--overwrite", action="store_true")
    return p


def _config(args: argparse.Namespace) -> GenerationConfig:
    default_method = "GFN2-xTB" if args.program == "tblite" else MethodSpec().method
    spec = MethodSpec(
        program=args.program,
        method=args.method or default_method,
        basis="" if args.program == "tblite" else args.basis,
        max_memory=args.max_memory,
        grid_level=args.grid_level,
    )
    return GenerationConfig(
        method=spec,
        n_irc=args.n_irc,
        n_nms_centres=args.n_nms_centres,
        n_nms_per_centre=args.n_nms_per_centre,
        temperature=args.temperature,
        seed=args.seed,
        irc_dx=args.irc_dx,
        irc_steps=args.irc_steps,
        irc_energy_tol=args.irc_energy_tol,
    )


def _stored_config(workdir: str) -> GenerationConfig:
    raw = read_json(Path(workdir) / "config.json")
    raw["method"] = MethodSpec(**raw["method"])
    return GenerationConfig(**raw)


def _stored_outcomes(workdirs: List[str]) -> List[ReactionOutcome]:
    outcomes = []
    for w in workdirs:
        for f in sorted(Path(w).glob("r[0-9]*/*.json")):
            if f.name in ("done.json", "rejected.json"):
                outcomes.append(ReactionOutcome(**read_json(f)))
    return outcomes


def run(args: argparse.Namespace) -> int:
    """Execute a parsed command line; returns the exit status."""
    if args.command == "run":
        config = _config(args)
        index, count = parse_shard(args.shard)
        reactions = select_shard(load_reactions(args.reactions), index, count)
        outcomes = generate(
            reactions,
            config,
            args.workdir,
            workers=args.workers,
            progress=not args.no_progress,
        )
        summary = {o.status: 0 for o in outcomes}
        for o in outcomes:
            summary[o.status] += 1
        logging.info("shard %s: %s", args.shard, json.dumps(summary))
        if args.out:
            done = [o for o in outcomes if o.status == "done"]
            if done:
                n = assemble(
                    [args.workdir],
                    args.out,
                    metadata=dataset_metadata(config, outcomes),
                    overwrite=args.overwrite,
                    reactions=[o.reaction for o in done],
                )
                logging.info("wrote %d structures to %s", n, args.out)
        return 0 if all(o.status != "failed" for o in outcomes) else 1
    if args.command == "assemble":
        config = _stored_config(args.workdirs[0])
        outcomes = _stored_outcomes(args.workdirs)
        n = assemble(
            args.workdirs,
            args.out,
            metadata=dataset_metadata(config, outcomes),
            overwrite=args.overwrite,
        )
        logging.info("wrote %d structures to %s", n, args.out)
        return 0
    if args.command == "merge":
        n = merge(args.files, args.out, overwrite=args.overwrite)
        logging.info("wrote %d structures to %s", n, args.out)
        return 0
    raise ValueError(f"unknown command {args.command!r}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: parse ``argv`` and :func:`run` it."""
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run(build_parser().parse_args(argv))
