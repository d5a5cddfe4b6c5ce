"""The generation workflow: reaction list → labelled critical points, IRC and NMS.

Per reaction (directory ``<workdir>/r{id:04d}/``), each step writes its result
before the next starts and is skipped when its file exists:

==================  =========================================================
``reactant.npz``    optimised reactant, energy/forces/Hessian, 0 imaginary modes,
                    same covalent bond graph as the input geometry
``product.npz``     optimised product, likewise
``ts.npz``          Sella ``order=1`` saddle point, exactly 1 imaginary mode
``irc_path.npz``    Sella IRC both ways (unlabelled), verified to connect R and P
``irc_XXX.npz``     labelled IRC points, evenly spread over both branches
``nms_JJ_SS.npz``   labelled normal-mode samples around intermediate IRC points
``done.json``       the reaction is complete (counts)
``rejected.json``   the reaction was rejected (reason); also in ``rejected.log``
==================  =========================================================

Each step starts with a reset engine and reads its inputs from the files, and every
random draw is seeded by ``(seed, reaction id, IRC point)``, so a run that is killed
and restarted produces exactly the files of an uninterrupted run.  :func:`assemble`
writes the finished reactions through :mod:`schnetpack_hessian.data`, ordered by
reaction id, so shards of a reaction list (``select_shard``) assemble or merge into
the same data set as one run.
"""

import logging
import os
import platform
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from schnetpack_hessian import properties
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.data.validation import symmetrize
from schnetpack_hessian.generate.atomrefs import (
    atom_reference_energies,
    atomrefs_table,
)
from schnetpack_hessian.generate.calculators import (
    Engine,
    MethodSpec,
    QCError,
    make_engine,
)
from schnetpack_hessian.generate.geometry import bond_changes
from schnetpack_hessian.generate.pathsearch import (
    PathError,
    find_ts,
    interpolated_guess,
    minimize,
    run_irc,
)
from schnetpack_hessian.generate.reactions import Reaction
from schnetpack_hessian.generate.sampling import evenly_spaced, normal_mode_samples
from schnetpack_hessian.generate.store import (
    load_arrays,
    load_structure,
    read_json,
    save_arrays,
    save_structure,
    write_json,
)
from schnetpack_hessian.processes import (
    die_with_parent,
    handle_signals,
    stopping_pool,
)

__all__ = [
    "GenerationConfig",
    "ReactionOutcome",
    "run_reaction",
    "generate",
    "iter_structures",
    "dataset_metadata",
    "require_counts",
    "finished_reactions",
    "keep_smallest",
    "assemble",
    "merge",
]

log = logging.getLogger(__name__)
PathLike = Union[str, Path]


@dataclass(frozen=True)
class GenerationConfig:
    """Settings of a generation run.

    Attributes:
        method: level of theory (:class:`MethodSpec`).
        n_irc: labelled IRC points per reaction, split over both branches.
        n_nms_centres: intermediate IRC points used as normal-mode-sampling centres.
        n_nms_per_centre: normal-mode samples per centre.
        temperature: normal-mode-sampling temperature in K.
        seed: base random seed.
        fmax_min: force convergence of minima in eV/Å.
        fmax_ts: force convergence of transition states in eV/Å.
        irc_dx: IRC step in Å·amu^½.
        irc_steps: maximum IRC steps per direction.
        irc_energy_tol: an IRC branch stops once a step lowers the energy by less
            than this (eV).
        n_images: interior images of the IDPP interpolation for the TS guess.
        imag_threshold: imaginary modes with ``|ν|`` below this (cm⁻¹) are noise.
        k_min: force-constant floor of normal-mode sampling in eV/Å².
    """

    method: MethodSpec = field(default_factory=MethodSpec)
    n_irc: int = 10
    n_nms_centres: int = 3
    n_nms_per_centre: int = 4
    temperature: float = 300.0
    seed: int = 0
    fmax_min: float = 0.01
    fmax_ts: float = 0.01
    irc_dx: float = 0.15
    irc_steps: int = 25
    irc_energy_tol: float = 2e-3
    n_images: int = 7
    imag_threshold: float = 20.0
    k_min: float = 1.0

    def to_dict(self) -> Dict[str, object]:
        """JSON-serialisable settings."""
        return asdict(self)


@dataclass
class ReactionOutcome:
    """Result of :func:`run_reaction`.

    Attributes:
        reaction: reaction id.
        name: reaction name.
        status: ``"done"``, ``"rejected"`` or ``"failed"`` (unexpected error; a
            rerun retries it).
        counts: structures per kind.
        reason: why it was rejected or failed.
    """

    reaction: int
    name: str
    status: str
    counts: Dict[str, int] = field(default_factory=dict)
    reason: str = ""


def _label(
    engine: Engine,
    numbers: np.ndarray,
    positions: np.ndarray,
    kind: str,
    rid: int,
    fresh: bool = True,
) -> HessianRecord:
    """The record of a geometry ``(N, 3)`` Å labelled by ``engine`` (eV, eV/Å, eV/Å²);
    ``fresh=False`` takes its cached result there."""
    res = engine.compute(numbers, positions, hessian=True, fresh=fresh)
    return HessianRecord(
        numbers=np.array(numbers),
        positions=np.array(positions, dtype=np.float64),
        energy=res.energy,
        forces=res.forces,
        hessian=res.hessian,
        kind=kind,
        reaction=rid,
    )


def _save_labelled(
    path: Path, atoms: Atoms, engine: Engine, kind: str, rid: int
) -> None:
    """Store a critical point with the engine's (cached) result at ``atoms``."""
    save_structure(
        path, _label(engine, atoms.numbers, atoms.positions, kind, rid, fresh=False)
    )


def _check_bonds_kept(start: Atoms, optimised: Atoms, label: str) -> None:
    """Raise :class:`PathError` if optimisation formed or broke a covalent bond
    (:func:`~.geometry.bond_changes`): the minimum is then another species than the
    one the reaction names."""
    formed, broken = bond_changes(start.numbers, start.positions, optimised.positions)
    if formed or broken:
        symbols = start.get_chemical_symbols()
        changed = [
            f"{symbols[i]}{i}-{symbols[j]}{j} {what}"
            for what, pairs in (("formed", formed), ("broken", broken))
            for i, j in pairs
        ]
        raise PathError(
            f"{label}: optimisation changed the bonds ({', '.join(changed)}); "
            "the minimum is not the intended species"
        )


def _minimum(
    rdir: Path,
    role: str,
    reaction: Reaction,
    engine: Engine,
    cfg: GenerationConfig,
) -> HessianRecord:
    path = rdir / f"{role}.npz"
    if not path.exists():
        engine.reset()
        start = getattr(reaction, role)
        label = f"reaction {reaction.id} ({reaction.name}) {role}"
        atoms, _ = minimize(
            start,
            engine,
            fmax=cfg.fmax_min,
            imag_threshold=cfg.imag_threshold,
            label=label,
        )
        _check_bonds_kept(start, atoms, label)
        _save_labelled(path, atoms, engine, role, reaction.id)
    return load_structure(path)


def _transition_state(
    rdir: Path,
    reaction: Reaction,
    react: HessianRecord,
    prod: HessianRecord,
    engine: Engine,
    cfg: GenerationConfig,
) -> HessianRecord:
    path = rdir / "ts.npz"
    if not path.exists():
        engine.reset()
        guess = reaction.ts_guess
        if guess is None:
            guess = interpolated_guess(
                react.as_atoms(), prod.as_atoms(), engine, cfg.n_images
            )
        ts, _ = find_ts(
            guess,
            engine,
            fmax=cfg.fmax_ts,
            imag_threshold=cfg.imag_threshold,
            label=f"reaction {reaction.id} ({reaction.name}) TS",
        )
        _save_labelled(path, ts, engine, "ts", reaction.id)
    return load_structure(path)


def _irc_path(
    rdir: Path,
    reaction: Reaction,
    structures: Dict[str, HessianRecord],
    engine: Engine,
    cfg: GenerationConfig,
) -> Dict[str, np.ndarray]:
    path = rdir / "irc_path.npz"
    if not path.exists():
        engine.reset()
        irc = run_irc(
            structures["ts"].as_atoms(),
            engine,
            structures["reactant"].as_atoms(),
            structures["product"].as_atoms(),
            dx=cfg.irc_dx,
            steps=cfg.irc_steps,
            energy_tol=cfg.irc_energy_tol,
            label=f"reaction {reaction.id} ({reaction.name}) IRC",
        )
        save_arrays(
            path,
            dict(
                positions=irc.positions,
                energies=irc.energies,
                ts_index=np.int64(irc.ts_index),
            ),
        )
    return load_arrays(path)


def _irc_picks(irc_path: Dict[str, np.ndarray], n_irc: int) -> List[int]:
    """Path indices of the labelled IRC points: ``n_irc`` spread evenly over the
    reactant branch (``⌈n/2⌉``) and the product branch (``⌊n/2⌋``), TS excluded."""
    its = int(irc_path["ts_index"])
    n_after = len(irc_path["positions"]) - its - 1
    picks = evenly_spaced(its, n_irc - n_irc // 2)
    return picks + [its + 1 + i for i in evenly_spaced(n_after, n_irc // 2)]


def _label_irc(
    rdir: Path,
    reaction: Reaction,
    irc_path: Dict[str, np.ndarray],
    engine: Engine,
    cfg: GenerationConfig,
) -> List[Path]:
    numbers = reaction.reactant.numbers
    files = []
    for k in _irc_picks(irc_path, cfg.n_irc):
        f = rdir / f"irc_{k:03d}.npz"
        if not f.exists():
            x = irc_path["positions"][k]
            save_structure(f, _label(engine, numbers, x, "irc", reaction.id))
        files.append(f)
    return files


def _label_nms(
    rdir: Path,
    reaction: Reaction,
    irc_files: List[Path],
    engine: Engine,
    cfg: GenerationConfig,
) -> None:
    """Normal-mode samples around intermediate labelled IRC points (not the branch
    ends), seeded by ``(seed, reaction id, IRC index)``."""
    numbers = reaction.reactant.numbers
    masses = Atoms(numbers=numbers).get_masses()
    inner = irc_files[1:-1] if len(irc_files) > 2 else irc_files
    for j in evenly_spaced(len(inner), cfg.n_nms_centres):
        centre = load_structure(inner[j])
        k = int(inner[j].stem.split("_")[1])
        samples = normal_mode_samples(
            numbers,
            centre.positions,
            masses,
            centre.hessian,
            cfg.n_nms_per_centre,
            cfg.temperature,
            np.random.default_rng([cfg.seed, reaction.id, k]),
            k_min=cfg.k_min,
        )
        for s, x in enumerate(samples):
            f = rdir / f"nms_{k:03d}_{s:02d}.npz"
            if not f.exists():
                save_structure(f, _label(engine, numbers, x, "nms", reaction.id))


def _structure_files(rdir: Path) -> List[Path]:
    """Labelled structure files of a finished reaction, in data-set order."""
    fixed = [rdir / f"{k}.npz" for k in properties.CRITICAL_KINDS]
    irc = sorted(p for p in rdir.glob("irc_[0-9]*.npz"))
    nms = sorted(rdir.glob("nms_*.npz"))
    return fixed + irc + nms


def _counts(files: Sequence[Path]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for f in files:
        kind = f.stem.split("_")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def run_reaction(
    reaction: Reaction, config: GenerationConfig, workdir: PathLike
) -> ReactionOutcome:
    """Run (or resume) every step of one reaction.

    Args:
        reaction: the reaction.
        config: generation settings.
        workdir: work directory; the reaction uses ``workdir/r{id:04d}``.

    Returns:
        The :class:`ReactionOutcome`.  Rejections (:class:`PathError`,
        :class:`QCError`) are written to ``rejected.json`` and ``rejected.log`` and
        not retried on a rerun; other errors return status ``"failed"``.
    """
    workdir = Path(workdir)
    rdir = workdir / reaction.tag
    rdir.mkdir(parents=True, exist_ok=True)
    for name in ("done.json", "rejected.json"):
        if (rdir / name).exists():
            return ReactionOutcome(**read_json(rdir / name))
    label = f"reaction {reaction.id} ({reaction.name})"
    engine = make_engine(config.method, reaction.charge, reaction.multiplicity)
    try:
        minima = {
            role: _minimum(rdir, role, reaction, engine, config)
            for role in ("reactant", "product")
        }
        ts = _transition_state(
            rdir, reaction, minima["reactant"], minima["product"], engine, config
        )
        irc_path = _irc_path(rdir, reaction, dict(minima, ts=ts), engine, config)
        irc_files = _label_irc(rdir, reaction, irc_path, engine, config)
        _label_nms(rdir, reaction, irc_files, engine, config)
    except (PathError, QCError) as err:
        outcome = ReactionOutcome(
            reaction.id, reaction.name, "rejected", reason=str(err)
        )
        write_json(rdir / "rejected.json", asdict(outcome))
        with open(workdir / "rejected.log", "a") as fh:
            fh.write(f"{reaction.id}\t{reaction.name}\t{err}\n")
        log.warning("rejected %s: %s", label, err)
        return outcome
    log.info(
        "%s: %d energy/force and %d Hessian evaluations in this run",
        label,
        engine.n_calls,
        engine.n_hessians,
    )
    outcome = ReactionOutcome(
        reaction.id, reaction.name, "done", counts=_counts(_structure_files(rdir))
    )
    write_json(rdir / "done.json", asdict(outcome))
    return outcome


def _safe_run(
    reaction: Reaction, config: GenerationConfig, workdir: str
) -> ReactionOutcome:
    try:
        return run_reaction(reaction, config, workdir)
    except Exception as err:  # reported and retried on the next run
        log.exception("reaction %d (%s) failed", reaction.id, reaction.name)
        return ReactionOutcome(
            reaction.id, reaction.name, "failed", reason=f"{type(err).__name__}: {err}"
        )


def _worker_init(threads: int, parent: int) -> None:
    # SIGTERM ends a worker at once (the parent stops them, or the kernel when the
    # parent is killed outright); Ctrl-C at a terminal reaches the whole process
    # group, and the parent handles it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        from pyscf import lib

        lib.num_threads(threads)
    except ImportError:
        pass


def generate(
    reactions: Sequence[Reaction],
    config: GenerationConfig,
    workdir: PathLike,
    workers: int = 1,
    progress: bool = True,
) -> List[ReactionOutcome]:
    """Run or resume every reaction; reactions run in parallel over ``workers``
    processes (each gets ``cpu_count // workers`` threads).  SIGTERM or Ctrl-C stops
    the workers and raises :class:`~schnetpack_hessian.processes.Interrupted`;
    finished reactions are kept and a rerun resumes.

    Args:
        reactions: the reactions (e.g. one shard of a list).
        config: generation settings.
        workdir: work directory (shared by all shards of a list is fine).
        workers: worker processes; 1 runs in this process.
        progress: show a tqdm progress bar.

    Returns:
        One :class:`ReactionOutcome` per reaction, in input order.
    """
    from tqdm.auto import tqdm

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "config.json", config.to_dict())
    bar = tqdm(total=len(reactions), desc="reactions", disable=not progress)
    outcomes: Dict[int, ReactionOutcome] = {}

    def report(o: ReactionOutcome) -> None:
        outcomes[o.reaction] = o
        bar.set_postfix_str(f"{o.name}: {o.status}")
        bar.update()
        log.info(
            "reaction %d (%s): %s %s %s",
            o.reaction,
            o.name,
            o.status,
            o.counts,
            o.reason,
        )

    if workers <= 1:
        for r in reactions:
            report(_safe_run(r, config, str(workdir)))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        # on SIGTERM, Ctrl-C or an error the workers are stopped, not awaited
        with (
            handle_signals(),
            ProcessPoolExecutor(
                workers, initializer=_worker_init, initargs=(threads, os.getpid())
            ) as pool,
            stopping_pool(pool),
        ):
            futures = [
                pool.submit(_safe_run, r, config, str(workdir)) for r in reactions
            ]
            for fut in as_completed(futures):
                report(fut.result())
    bar.close()
    return [outcomes[r.id] for r in reactions]


def _left_out(outcome: ReactionOutcome, reason: str) -> ReactionOutcome:
    """A finished reaction's outcome turned into a rejection at assembly."""
    return replace(
        outcome, status="rejected", counts=dict(outcome.counts), reason=reason
    )


def finished_reactions(workdirs: Iterable[PathLike]) -> Dict[int, Path]:
    """Reaction id → directory of every finished reaction in ``workdirs``.

    Raises:
        ValueError: a reaction is finished in two different directories.
    """
    done: Dict[int, Path] = {}
    for w in workdirs:
        for f in Path(w).glob("r[0-9]*/done.json"):
            rid = int(read_json(f)["reaction"])
            rdir = f.parent.resolve()  # the same directory linked into two work dirs
            if rid in done and done[rid] != rdir:
                raise ValueError(
                    f"reaction {rid} is finished in both {done[rid]} and {rdir}"
                )
            done[rid] = rdir
    return done


def keep_smallest(
    outcomes: Sequence[ReactionOutcome],
    workdirs: Iterable[PathLike],
    max_reactions: int,
) -> List[ReactionOutcome]:
    """At most ``max_reactions`` finished reactions: those with the fewest atoms
    (ties: lower id); the others become rejections that say why (to bound a file's
    size, which grows with N² per structure).

    Args:
        outcomes: outcomes of a generation run.
        workdirs: the work directories holding the finished reactions.
        max_reactions: number of finished reactions to keep.
    """
    dirs = finished_reactions(workdirs)
    done = [o for o in outcomes if o.status == "done"]
    size = {
        o.reaction: len(load_structure(dirs[o.reaction] / "ts.npz").numbers)
        for o in done
    }
    kept = {
        o.reaction
        for o in sorted(done, key=lambda o: (size[o.reaction], o.reaction))[
            :max_reactions
        ]
    }
    out = []
    for o in outcomes:
        if o.status == "done" and o.reaction not in kept:
            o = _left_out(
                o,
                f"left out at assembly: {size[o.reaction]} atoms; the "
                f"{max_reactions} smallest of {len(done)} finished reactions are kept",
            )
        out.append(o)
    return out


def iter_structures(
    workdirs: Iterable[PathLike], reactions: Optional[Iterable[int]] = None
) -> Iterator[HessianRecord]:
    """Labelled structures of every finished reaction, ordered by reaction id.

    Args:
        workdirs: one or more work directories (e.g. one per shard).
        reactions: only these reaction ids (default: all finished ones).

    Yields:
        Records in ASE units (Å, eV, eV/Å, eV/Å²) with kind, reaction and their
        checkpoint file as origin; the Hessian ``(3N, 3N)`` symmetrised as
        ``(H + Hᵀ)/2`` (the work files keep the program's raw Hessian).
    """
    workdirs = [Path(w) for w in workdirs]
    done = finished_reactions(workdirs)
    wanted = sorted(done) if reactions is None else sorted(set(reactions))
    for rid in wanted:
        if rid not in done:
            raise ValueError(f"reaction {rid} is not finished in {list(workdirs)}")
        for path in _structure_files(done[rid]):
            record = load_structure(path)
            if record is None:
                raise FileNotFoundError(f"reaction {rid}: {path} is missing")
            yield replace(record, hessian=symmetrize(record.hessian))


def _package_version(name: str = "schnetpack-hessian") -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def dataset_metadata(
    config: GenerationConfig,
    outcomes: Sequence[ReactionOutcome],
    elements: Sequence[int] = (1, 6, 7, 8),
) -> Dict[str, object]:
    """Metadata of a generated data set: level of theory, program versions, units,
    settings, the reactions (names, status, counts) and SchNetPack ``atomrefs``:
    free-atom energies of ``elements`` (eV) at the same level of theory."""
    import ase

    engine = make_engine(config.method)
    references = atom_reference_energies(config.method, elements)
    meta: Dict[str, object] = {
        "atomrefs": {"energy": atomrefs_table(references)},
        "atomrefs_definition": "energy of the free atom in its ground-state spin "
        "multiplicity (unrestricted), same method and basis, eV",
        "source": "schnetpack_hessian.generate (optimisation, Sella TS search and "
        "IRC, ANI-style normal-mode sampling)",
        "level_of_theory": engine.metadata(),
        "programs": {
            "schnetpack_hessian": _package_version(),
            "python": platform.python_version(),
            "ase": ase.__version__,
            "sella": _package_version("sella"),
            "numpy": np.__version__,
        },
        "units": dict(properties.DEFAULT_UNITS, positions="Ang"),
        "hessian_symmetrized": "stored as (H + H^T)/2 of the program's Hessian",
        "generation": config.to_dict(),
        "reactions": {
            str(o.reaction): {
                "name": o.name,
                "status": o.status,
                "counts": o.counts,
                "reason": o.reason,
            }
            for o in sorted(outcomes, key=lambda o: o.reaction)
        },
    }
    return meta


def require_counts(
    outcomes: Sequence[ReactionOutcome], minimum: Dict[str, int]
) -> List[ReactionOutcome]:
    """The outcomes with every finished reaction that has fewer structures of a kind
    than ``minimum[kind]`` turned into a rejection that says so (e.g. the short IRC
    of a low barrier: ``{"irc": 10, "nms": 12}``); others are returned unchanged.

    Args:
        outcomes: outcomes of a generation run (:func:`generate`).
        minimum: least number of structures per kind.
    """
    kept = []
    for o in outcomes:
        short = {
            k: (o.counts.get(k, 0), n)
            for k, n in minimum.items()
            if o.status == "done" and o.counts.get(k, 0) < n
        }
        if short:
            why = ", ".join(
                f"{got} {k} structures < {n}" for k, (got, n) in short.items()
            )
            o = _left_out(o, f"too few points: {why}")
        kept.append(o)
    return kept


def assemble(
    workdirs: Sequence[PathLike],
    out: PathLike,
    metadata: Optional[Dict[str, object]] = None,
    overwrite: bool = False,
    reactions: Optional[Iterable[int]] = None,
    precision: str = "float64",
) -> int:
    """Write every finished reaction of ``workdirs`` to one training file.

    Args:
        workdirs: work directories (one run, or one per shard).
        out: output path; ``.h5`` or ``.db`` (chosen by :mod:`schnetpack_hessian.data`).
        metadata: metadata stored with the file (see :func:`dataset_metadata`).
        overwrite: replace an existing file.
        reactions: only these reaction ids (default: every finished reaction).
        precision: storage dtype of forces and Hessians in ``.h5`` files.

    Returns:
        Number of structures written.
    """
    from schnetpack_hessian import data

    structures = list(iter_structures(workdirs, reactions))
    if not structures:
        raise ValueError(f"no finished reaction in {list(map(str, workdirs))}")
    data.write_records(
        out,
        structures,
        data.ASE_UNITS,
        metadata=metadata,
        overwrite=overwrite,
        precision=precision,
    )
    return len(structures)


def merge(
    files: Sequence[PathLike],
    out: PathLike,
    metadata: Optional[Dict[str, object]] = None,
    overwrite: bool = False,
) -> int:
    """Merge shard outputs into one file, ordered by reaction id (stable), which
    equals the file a single run over all shards writes.

    Shards of one reaction list have disjoint reaction ids and keep them; files
    whose ids collide (e.g. two separate runs, both numbering from 0) get their ids
    shifted past the earlier files' (:class:`~schnetpack_hessian.data.record.
    InputReactions`), so different reactions never share an id, and their
    ``reactions`` tables (names) move with them.  Structures given twice (same atoms
    and positions) are reported in a warning.

    Args:
        files: shard files written by :func:`assemble`.
        out: output path (``.h5`` or ``.db``).
        metadata: metadata for the merged file; default: the first shard's, with
            the ``reactions`` tables of all shards combined.
        overwrite: replace an existing file.

    Returns:
        Number of structures written.

    Raises:
        ValueError: a shard cannot be read (file and problem named), or the shards'
            levels of theory differ.
    """
    from schnetpack_hessian import data
    from schnetpack_hessian.data.record import Duplicates, InputReactions

    try:
        metas = [data.file_metadata(f) for f in files]
        reactions = InputReactions()
        duplicates = Duplicates()
        table: Dict[str, object] = {}
        structures = []
        for f, md in zip(files, metas):
            offset = reactions.add(str(f), *data.file_reactions(f))
            entries = md.get("reactions") or {}
            if isinstance(entries, list):
                entries = {str(i): {"name": n} for i, n in enumerate(entries)}
            for key, value in entries.items():
                table[str(int(key) + offset)] = value
            for record in data.iread_records(f):
                record.reaction = reactions.shift(record.reaction, offset)
                duplicates(record.numbers, record.positions, str(record.origin))
                structures.append(record)
    except data.HessianDataError as err:  # a missing, truncated or foreign shard
        raise ValueError(f"shard {err}") from err
    for f, offset in reactions.shifted:
        log.warning(
            "%s: reaction ids shifted by %d, they collide with an earlier file's",
            f,
            offset,
        )
    message = duplicates.message(f"merging into {out}")
    if message:
        log.warning(message)
    if metadata is None:
        metadata = {
            k: v
            for k, v in metas[0].items()
            if not k.startswith("_") and k not in ("kinds", "hessian_layout")
        }
        for f, md in zip(files, metas):
            if md.get("level_of_theory") != metadata.get("level_of_theory"):
                raise ValueError(
                    f"{f}: level of theory {md.get('level_of_theory')} differs from "
                    f"{files[0]}: {metadata.get('level_of_theory')}"
                )
        metadata["reactions"] = dict(sorted(table.items(), key=lambda kv: int(kv[0])))
    structures.sort(key=lambda r: int(r.reaction))
    data.write_records(
        out, structures, data.ASE_UNITS, metadata=metadata, overwrite=overwrite
    )
    return len(structures)
