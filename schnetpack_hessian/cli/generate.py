"""``spkhess-generate``: enumerate reactions, generate their data, assemble, merge.

``data_scripts/generate_reactive_set.py`` is a thin wrapper over it.  Sub-commands:

- ``enumerate``: propose elementary reactions of a SMILES list by graph edits
  (:mod:`schnetpack_hessian.generate.enumerate`) and write a YAML reaction list;
- ``run``: generate (or resume) the reactions of a YAML list, optionally one shard
  ``--shard I/N`` of it, then write the finished reactions to ``--out``;
- ``assemble``: write the finished reactions of one or more work directories;
- ``card``: print the data-card tables of a generated file (numbers from the file)
  and optionally plot its size, barrier and TS-frequency distributions;
- ``merge``: merge shard output files into one, ordered by reaction id;
- ``label``: give a training file a teacher model's Hessians
  (:mod:`schnetpack_hessian.generate.label`).

Nothing here imports torch at start-up: tblite's C extension must load the system
``libgomp`` before torch loads its own older copy (see docs/GENERATE.md).
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from schnetpack_hessian.files import TRAINING_SUFFIXES, check_output, claim_output
from schnetpack_hessian.generate.calculators import MethodSpec
from schnetpack_hessian.generate.enumerate import (
    EDITS,
    SMALL_MOLECULES,
    enumerate_reactions,
    listed_keys,
    read_molecules,
    select_per_edit,
    shipped_molecules_path,
    write_reaction_list,
)
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
    keep_smallest,
    merge,
    require_counts,
)
from schnetpack_hessian.processes import run_cli

__all__ = ["build_parser", "check_outputs", "run", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    p = argparse.ArgumentParser(
        prog="spkhess-generate",
        description="Generate reactive critical-point data (minima, TS, IRC, "
        "normal-mode samples) with energies, forces and Hessians.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("enumerate", help="SMILES list -> YAML reaction list")
    e.add_argument(
        "--molecules",
        default=None,
        help="SMILES list, one 'SMILES [name]' per line (default: the shipped "
        "molecules_chon.smi)",
    )
    e.add_argument("--out", required=True, help="YAML reaction list to write")
    e.add_argument("--edits", nargs="+", default=list(EDITS), choices=EDITS)
    e.add_argument(
        "--small-molecules",
        nargs="+",
        default=list(SMALL_MOLECULES),
        choices=list(SMALL_MOLECULES),
        help="small molecules released by eliminations / added by additions",
    )
    e.add_argument("--seed", type=int, default=0, help="ETKDG and selection seed")
    e.add_argument("--max-heavy", type=int, default=7, help="heavy atoms per molecule")
    e.add_argument("--max-atoms", type=int, default=14, help="atoms per reaction")
    e.add_argument("--n-confs", type=int, default=10, help="conformers per fragment")
    e.add_argument(
        "--per-edit",
        type=int,
        default=None,
        help="keep at most this many reactions of each edit type (seeded choice)",
    )
    e.add_argument("--first-id", type=int, default=0, help="id of the first reaction")
    e.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        help="enumerated reaction lists whose reactions are left out (to grow a set "
        "without repeating a reaction)",
    )

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
    a.add_argument(
        "--min-irc",
        type=int,
        default=0,
        help="leave out (as rejected) reactions with fewer IRC points",
    )
    a.add_argument(
        "--min-nms",
        type=int,
        default=0,
        help="leave out (as rejected) reactions with fewer normal-mode samples",
    )
    a.add_argument(
        "--max-reactions",
        type=int,
        default=None,
        help="keep only this many reactions, those with the fewest atoms (bounds "
        "the file size); the others are recorded as left out",
    )
    a.add_argument(
        "--precision",
        default="float64",
        choices=["float64", "float32"],
        help="storage dtype of forces and Hessians in .h5 files",
    )

    c = sub.add_parser(
        "card", help="print a generated file's data-card tables (and plot them)"
    )
    c.add_argument("file", help="generated .h5 / .db file")
    c.add_argument("--plot", help="PNG of sizes, barriers and TS frequencies")
    c.add_argument(
        "--per-reaction",
        action="store_true",
        help="add a table with one row per reaction (counts, barriers, TS frequency)",
    )
    c.add_argument(
        "--update",
        metavar="CARD",
        help="also write the tables into this Markdown card, between its "
        "'<!-- card tables: begin/end -->' markers",
    )

    lab = sub.add_parser(
        "label", help="give a training file a teacher model's Hessians"
    )
    lab.add_argument("file", help="training file (.h5 / .db)")
    lab.add_argument(
        "--teacher",
        required=True,
        help="model file, run directory or pretrained:NAME (a model file is pickled "
        "code: use only models you trust)",
    )
    lab.add_argument("--out", required=True, help="labelled .h5 / .db file")
    lab.add_argument(
        "--all",
        action="store_true",
        help="replace reference Hessians too (default: label only structures "
        "without one)",
    )
    lab.add_argument(
        "--probes",
        type=int,
        metavar="K",
        help="store K Hessian-vector products per structure with their probes "
        "instead of full Hessians (product labels)",
    )
    lab.add_argument(
        "--probe",
        default="gaussian",
        choices=["gaussian", "rademacher", "rows"],
        help="the probes of --probes (train with the same globals.probe)",
    )
    lab.add_argument("--seed", type=int, default=0, help="seed of the probes")
    lab.add_argument("--device", default="cpu", help="where the teacher runs")
    lab.add_argument("--precision", default="float64", choices=["float64", "float32"])
    lab.add_argument("--overwrite", action="store_true")

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


def _enumerate_command(args: argparse.Namespace) -> str:
    """The ``spkhess-generate enumerate`` command line that reproduces ``args``."""
    parts = [
        f"spkhess-generate enumerate --molecules {args.molecules} --out {args.out}",
        "--edits " + " ".join(args.edits),
        "--small-molecules " + " ".join(args.small_molecules),
        f"--seed {args.seed} --max-heavy {args.max_heavy} --max-atoms "
        f"{args.max_atoms} --n-confs {args.n_confs} --first-id {args.first_id}",
    ]
    if args.per_edit is not None:
        parts.append(f"--per-edit {args.per_edit}")
    if args.exclude:
        parts.append("--exclude " + " ".join(args.exclude))
    return " ".join(parts)


def _enumerate(args: argparse.Namespace) -> int:
    if args.molecules is None:
        args.molecules = str(shipped_molecules_path())
    with open(args.molecules) as fh:
        molecules, problems = read_molecules(fh, args.max_heavy, args.max_atoms)
    reactions = enumerate_reactions(
        molecules,
        edits=args.edits,
        seed=args.seed,
        n_confs=args.n_confs,
        max_atoms=args.max_atoms,
        small_molecules=args.small_molecules,
    )
    found = len(reactions)
    if args.exclude:
        known = listed_keys(args.exclude)
        reactions = [r for r in reactions if r.key not in known]
    excluded = found - len(reactions)
    if args.per_edit is not None:
        reactions = select_per_edit(reactions, args.per_edit, args.seed)
    counts = {k: 0 for k in args.edits}
    for r in reactions:
        counts[r.edit] += 1
    header = "\n".join(
        [
            f"Reactions enumerated from {args.molecules} by spkhess-generate enumerate:",
            "  " + _enumerate_command(args),
            f"{len(molecules)} molecules used, {len(problems)} lines skipped, "
            f"{found} reactions found, {excluded} of them excluded (listed in "
            f"{', '.join(args.exclude) or 'no list'}), {len(reactions)} written.",
            "Per edit: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        ]
        + [f"skipped line {p.line} ({p.reason}): {p.text}" for p in problems]
    )
    write_reaction_list(reactions, args.out, first_id=args.first_id, header=header)
    logging.info("wrote %d reactions to %s (%s)", len(reactions), args.out, counts)
    return 0


def _run(args: argparse.Namespace) -> int:
    """``run``: generate (or resume) a shard, then write the finished reactions."""
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


def run(args: argparse.Namespace) -> int:
    """Execute a parsed command line; returns the exit status."""
    if args.command == "enumerate":
        return _enumerate(args)
    if args.command == "run":
        if not args.out:
            return _run(args)
        # claimed before hours of computation: a second run to --out is refused now
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with claim_output(args.out):
            return _run(args)
    if args.command == "assemble":
        config = _stored_config(args.workdirs[0])
        outcomes = require_counts(
            _stored_outcomes(args.workdirs), {"irc": args.min_irc, "nms": args.min_nms}
        )
        if args.max_reactions is not None:
            outcomes = keep_smallest(outcomes, args.workdirs, args.max_reactions)
        if not any(o.status == "done" for o in outcomes):
            logging.error(
                "no finished reaction in %s has --min-irc %d IRC points and "
                "--min-nms %d normal-mode samples; nothing written",
                ", ".join(args.workdirs),
                args.min_irc,
                args.min_nms,
            )
            return 1
        n = assemble(
            args.workdirs,
            args.out,
            metadata=dataset_metadata(config, outcomes),
            overwrite=args.overwrite,
            reactions=[o.reaction for o in outcomes if o.status == "done"],
            precision=args.precision,
        )
        logging.info("wrote %d structures to %s", n, args.out)
        return 0
    if args.command == "card":
        from schnetpack_hessian.generate.card import (
            card_text,
            plot_distributions,
            set_statistics,
            update_card,
        )

        stats = set_statistics(args.file)
        tables = card_text(args.file, args.per_reaction, stats)
        print(tables, end="")
        if args.update:
            update_card(args.update, tables)
        if args.plot:
            plot_distributions(stats, args.plot)
        return 0
    if args.command == "label":
        from schnetpack_hessian.evaluation.model import load_model
        from schnetpack_hessian.generate.label import label_file

        report = label_file(
            args.file,
            args.out,
            load_model(args.teacher, device=args.device),
            all_structures=args.all,
            overwrite=args.overwrite,
            precision=args.precision,
            n_probes=args.probes,
            probe=args.probe,
            seed=args.seed,
        )
        logging.info(
            "wrote %d structures to %s: %d labelled by the teacher, %d with "
            "their reference Hessian",
            report.n_structures,
            args.out,
            report.n_labelled,
            report.n_kept,
        )
        return 0
    if args.command == "merge":
        n = merge(args.files, args.out, overwrite=args.overwrite)
        logging.info("wrote %d structures to %s", n, args.out)
        return 0
    raise ValueError(f"unknown command {args.command!r}")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse bad output paths before any reaction is computed (a wrong suffix, an
    existing file without ``--overwrite``, an unwritable directory).

    Raises:
        OutputPathError: the option, the path and the problem named.
        FileExistsError: the output exists and ``--overwrite`` is not given.
    """
    out = getattr(args, "out", None)
    if out is None:
        return
    suffixes = (".yaml", ".yml") if args.command == "enumerate" else TRAINING_SUFFIXES
    overwrite = getattr(args, "overwrite", args.command == "enumerate")
    check_output(out, "--out", suffixes, overwrite=overwrite)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: parse ``argv``, check the outputs and :func:`run` it; a bad
    reaction list, shard or output is one sentence (exit 1), SIGTERM or Ctrl-C stops
    the workers (exit 143 or 130; finished reactions are kept)."""
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    args = build_parser().parse_args(argv)

    def body() -> int:
        check_outputs(args)
        return run(args)

    return run_cli("spkhess-generate", body, (ValueError,))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
