"""Transition-state searches on a model's surface, with and without its Hessian.

Two protocols, each from every reaction with a reference TS (or a seeded subset of
``max_reactions`` of them):

* ``endpoints`` (as users run a search): from the reaction's reactant and product,
  the highest-energy image of an IDPP interpolation on the model
  (:func:`~.tsguess.interpolated_guess`);
* reference starts: the reference TS displaced by a seeded random perturbation, and
  the highest IRC point on each side of it.

From every start Sella runs an order-1 saddle search twice:

* ``model_hessian``: the model's exact analytic Hessian (``HessianCalculator``) as
  Sella's ``hessian_function``, re-diagonalised at every step (``diag_every_n=1``,
  as NewtonNet's workflow does; with Sella's defaults the Hessian only seeds the
  first step);
* ``sella_updates``: Sella's own iterative Hessian estimate from forces only, the
  baseline users have without a Hessian model.

A search succeeds when it converges (max force below ``fmax``), the model's Hessian at
the result has exactly one imaginary mode, and the result lies within
``rmsd_threshold`` Å (Kabsch, atom-mapped) of the reference TS; a search from the
end points must also be *intended*: the model's IRC from the saddle relaxes to the
reactant's and the product's bond graphs (:func:`~.tsguess.irc_connects`, run only
for searches that pass the other tests).
"""

import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms
from tqdm import tqdm

from schnetpack_hessian.quiet import optimiser_warnings
from schnetpack_hessian.calculator import HessianCalculator
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.evaluation.reactions import ReactionPath
from schnetpack_hessian.evaluation.spectra import IMAG_THRESHOLD
from schnetpack_hessian.evaluation.tsguess import interpolated_guess, irc_connects
from schnetpack_hessian.generate.geometry import rmsd
from schnetpack_hessian.vibrations import count_imaginary

__all__ = [
    "METHODS",
    "TSSearchSettings",
    "TSSearchResult",
    "TSStart",
    "perturb",
    "ts_starts",
    "ts_search",
    "ts_searches",
    "summarize_ts_searches",
]

#: The two ways of running Sella that are compared.
METHODS: Tuple[str, ...] = ("model_hessian", "sella_updates")

#: Label of a search started from the reaction's end points.
ENDPOINTS = "endpoints"


@dataclass(frozen=True)
class TSSearchSettings:
    """How the searches start, run and are judged.

    Attributes:
        n_perturbations: seeded random displacements of each reference TS.
        perturbation_rms: RMS displacement per atom in Å.
        irc_starts: also start from the highest IRC point on each side of the TS.
        fmax: convergence threshold on the largest force, eV/Å.
        max_steps: Sella steps before a search counts as not converged.
        rmsd_threshold: largest RMSD (Å) from the reference TS for a success.
        imag_threshold: |ν| in cm⁻¹ below which an imaginary mode is not counted.
        seed: seed of the perturbations and of the reaction subset.
        methods: which searches run from every start (:data:`METHODS`).
        endpoint_starts: also start from the reactant and product (IDPP guess).
        n_images: interior images of the IDPP path.
        irc_check: a search from the end points must be intended (model IRC).
        max_reactions: search at most this many reactions (a seeded subset; 0: all).
    """

    n_perturbations: int = 3
    perturbation_rms: float = 0.1
    irc_starts: bool = True
    fmax: float = 0.01
    max_steps: int = 200
    rmsd_threshold: float = 0.15
    imag_threshold: float = IMAG_THRESHOLD
    seed: int = 0
    methods: Tuple[str, ...] = METHODS
    endpoint_starts: bool = False
    n_images: int = 9
    irc_check: bool = True
    max_reactions: int = 0

    def __post_init__(self):
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ValueError(
                f"TSSearchSettings: methods {list(self.methods)} must be a non-empty "
                f"subset of {METHODS}"
            )


@dataclass(frozen=True)
class TSStart:
    """A start: reaction, label (``endpoints``, ``perturbed-<k>``, ``irc-<side>``),
    its structure (``None`` for ``endpoints``: the guess is made on the model when
    the search runs), the reference TS it should lead to, and the reaction's
    reference reactant and product (end-point starts)."""

    reaction: int
    label: str
    atoms: Optional[Atoms]
    reference_ts: Atoms
    reactant: Optional[Atoms] = None
    product: Optional[Atoms] = None


@dataclass(frozen=True)
class TSSearchResult:
    """Outcome of one search (one row of the TS-search table)."""

    reaction: int
    start: str
    method: str
    converged: bool
    steps: int
    force_calls: int
    hessian_calls: int
    n_imaginary: int
    rmsd: float
    success: bool
    seconds: float
    intended: Optional[bool] = None

    def as_row(self) -> Dict[str, object]:
        """The result as a flat dict."""
        return asdict(self)


def perturb(atoms: Atoms, rms: float, rng: np.random.Generator) -> Atoms:
    """Copy of ``atoms`` displaced by a random vector of RMS ``rms`` Å per atom
    (centre of mass of the displacement removed)."""
    d = rng.normal(size=atoms.positions.shape)
    d -= d.mean(0)
    d *= rms / np.sqrt(np.mean(np.sum(d**2, axis=1)))
    return Atoms(numbers=atoms.numbers, positions=atoms.positions + d)


def ts_starts(
    structures: Sequence[HessianRecord],
    paths: Dict[int, ReactionPath],
    settings: TSSearchSettings = TSSearchSettings(),
) -> List[TSStart]:
    """Starts of every reaction that has a reference TS (or of a seeded subset of
    ``settings.max_reactions`` of them, the same whatever model is searched).

    Args:
        structures: the reference records (ASE units) ``paths`` index into.
        paths: the reactions (:func:`~.reactions.reaction_paths`).
        settings: which starts to make.
    """
    starts: List[TSStart] = []
    searched = sorted(rid for rid, rp in paths.items() if rp.ts is not None)
    if 0 < settings.max_reactions < len(searched):
        rng = np.random.default_rng(settings.seed)
        searched = sorted(
            rng.choice(searched, size=settings.max_reactions, replace=False).tolist()
        )
    for rid in searched:
        rp = paths[rid]
        ts = structures[rp.ts].as_atoms()
        if settings.endpoint_starts and None not in (rp.reactant, rp.product):
            starts.append(
                TSStart(
                    rid,
                    ENDPOINTS,
                    None,
                    ts,
                    structures[rp.reactant].as_atoms(),
                    structures[rp.product].as_atoms(),
                )
            )
        for k in range(settings.n_perturbations):
            rng = np.random.default_rng([settings.seed, rid, k])
            starts.append(
                TSStart(
                    rid,
                    f"perturbed-{k}",
                    perturb(ts, settings.perturbation_rms, rng),
                    ts,
                )
            )
        if not settings.irc_starts or rp.ts not in rp.path:
            continue
        pos = rp.path.index(rp.ts)
        irc = set(rp.irc)
        for side, candidates in (("R", rp.path[:pos]), ("P", rp.path[pos + 1 :])):
            candidates = [i for i in candidates if i in irc]
            if candidates:
                top = max(candidates, key=lambda i: structures[i].energy)
                start = structures[top].as_atoms()
                starts.append(TSStart(rid, f"irc-{side}", start, ts))
    return starts


def ts_search(
    calc: HessianCalculator,
    start: TSStart,
    method: str,
    settings: TSSearchSettings = TSSearchSettings(),
) -> TSSearchResult:
    """One Sella order-1 search from ``start`` on the model behind ``calc``.

    Args:
        calc: the model's calculator (its call counters are reset).
        start: where to start and which TS to compare with.
        method: ``"model_hessian"`` or ``"sella_updates"`` (see the module docstring).
        settings: thresholds.
    """
    from sella import Sella

    if method not in METHODS:
        raise ValueError(f"ts_search: method must be one of {METHODS}, got {method!r}")
    calc.reset()
    calc.n_calls = {"forces": 0, "hessian": 0}
    t0 = time.perf_counter()
    if start.atoms is None:
        atoms, _ = interpolated_guess(
            start.reactant, start.product, calc, settings.n_images
        )
    else:
        atoms = start.atoms.copy()
    atoms.calc = calc
    extra = {}
    if method == "model_hessian":
        extra = dict(hessian_function=calc.get_hessian, diag_every_n=1)
    with optimiser_warnings():
        opt = Sella(
            atoms, order=1, internal=True, logfile=None, trajectory=None, **extra
        )
        try:
            converged = bool(opt.run(fmax=settings.fmax, steps=settings.max_steps))
        except (np.linalg.LinAlgError, ValueError, RuntimeError):
            converged = False  # Sella failed on this geometry: not a success
    calls = dict(calc.n_calls)
    n_imag = count_imaginary(
        calc.get_hessian(atoms), atoms=atoms, threshold=settings.imag_threshold
    )
    dist = rmsd(atoms.positions, start.reference_ts.positions)
    success = converged and n_imag == 1 and dist < settings.rmsd_threshold
    intended = None
    if start.label == ENDPOINTS and settings.irc_check and success:
        hessian = calc.get_hessian if method == "model_hessian" else None
        intended = irc_connects(atoms, start.reactant, start.product, calc, hessian)
        success = intended
    seconds = time.perf_counter() - t0
    return TSSearchResult(
        reaction=start.reaction,
        start=start.label,
        method=method,
        converged=converged,
        steps=int(opt.nsteps),
        force_calls=calls["forces"],
        hessian_calls=calls["hessian"],
        n_imaginary=n_imag,
        rmsd=dist,
        success=success,
        seconds=seconds,
        intended=intended,
    )


def ts_searches(
    calc: HessianCalculator,
    starts: Sequence[TSStart],
    settings: TSSearchSettings = TSSearchSettings(),
    methods: Optional[Sequence[str]] = None,
    progress: bool = False,
) -> List[TSSearchResult]:
    """Every start with every method (default ``settings.methods``), with a progress
    bar over searches."""
    jobs = [(s, m) for s in starts for m in (methods or settings.methods)]
    return [
        ts_search(calc, s, m, settings)
        for s, m in tqdm(jobs, desc="TS searches", unit="search", disable=not progress)
    ]


def summarize_ts_searches(
    results: Sequence[TSSearchResult],
) -> Dict[str, Dict[str, float]]:
    """Per protocol and method (``model_hessian``, ``sella_updates`` for the
    reference starts; ``endpoints_model_hessian``, ``endpoints_sella_updates`` for
    the end-point starts): searches, success rate, the rates of converging and of
    converging to a first-order saddle point (one imaginary mode, wherever it lies),
    the median RMSD of those saddle points to the reference TS, and the median steps,
    force calls and Hessian calls of the successful searches (NaN where there are
    none; an end-point search's calls include the guess's energies, not the IRC
    check's)."""
    summary: Dict[str, Dict[str, float]] = {}
    for endpoints in (False, True):
        for method in METHODS:
            rs = [
                r
                for r in results
                if r.method == method and (r.start == ENDPOINTS) == endpoints
            ]
            if not rs:
                continue
            ok = [r for r in rs if r.success]
            saddles = [r for r in rs if r.converged and r.n_imaginary == 1]

            def median(runs: Sequence[TSSearchResult], key: str) -> float:
                if not runs:
                    return float("nan")
                return float(np.median([getattr(r, key) for r in runs]))

            key = f"{ENDPOINTS}_{method}" if endpoints else method
            summary[key] = {
                "n_searches": len(rs),
                "success_rate": len(ok) / len(rs),
                "converged_rate": sum(r.converged for r in rs) / len(rs),
                "saddle_rate": len(saddles) / len(rs),
                "median_saddle_rmsd": median(saddles, "rmsd"),
                "median_steps": median(ok, "steps"),
                "median_force_calls": median(ok, "force_calls"),
                "median_hessian_calls": median(ok, "hessian_calls"),
            }
    return summary
