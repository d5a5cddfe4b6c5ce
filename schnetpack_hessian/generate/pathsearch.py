"""Critical points and reaction paths: minima, transition states, IRCs.

- :func:`minimize`: ASE BFGS to a minimum, then a frequency check; a minimum with an
  imaginary mode is displaced along it and re-optimised.
- :func:`interpolated_guess`: IDPP interpolation between the aligned end points;
  the highest-energy interior image is the transition-state guess.
- :func:`find_ts`: Sella ``order=1`` refinement with the exact Hessian as
  ``hessian_function``; accepted only with exactly one imaginary mode (mass
  weighted, rigid-body modes projected out).
- :func:`run_irc`: Sella IRC both ways from the TS, checked to connect the reactant
  and the product (covalent bond graphs, RMSD to break ties between conformers).

Failures raise :class:`PathError` with a message fit for the rejection log.
"""

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
from ase import Atoms
from ase.mep import NEB
from ase.optimize import BFGS

from schnetpack_hessian.quiet import optimiser_warnings
from schnetpack_hessian import vibrations
from schnetpack_hessian.generate.calculators import Engine, EngineCalculator, QCError
from schnetpack_hessian.generate.geometry import (
    bond_graph,
    kabsch_align,
    n_fragments,
    rmsd,
)

__all__ = [
    "PathError",
    "IRCPath",
    "minimize",
    "interpolated_guess",
    "find_ts",
    "run_irc",
    "connects",
]


class PathError(RuntimeError):
    """A reaction was rejected: optimisation failed, wrong number of imaginary
    modes, or the IRC does not connect the end points."""


def _attach(atoms: Atoms, engine: Engine) -> Atoms:
    a = Atoms(numbers=atoms.numbers, positions=atoms.positions)
    a.calc = EngineCalculator(engine)
    return a


def minimize(
    atoms: Atoms,
    engine: Engine,
    fmax: float = 0.01,
    steps: int = 300,
    imag_threshold: float = 20.0,
    max_restarts: int = 2,
    label: str = "structure",
) -> Tuple[Atoms, np.ndarray]:
    """Optimise to a minimum and verify it has no imaginary mode.

    Args:
        atoms: starting geometry (Å).
        engine: energy/forces/Hessian engine.
        fmax: force convergence in eV/Å.
        steps: maximum BFGS steps per attempt.
        imag_threshold: imaginary modes with ``|ν|`` below this (cm⁻¹) are noise.
        max_restarts: how often to displace along an imaginary mode and retry.
        label: name used in error messages.

    Returns:
        The optimised geometry and its ``(3N, 3N)`` Hessian in eV/Å².
    """
    a = _attach(atoms, engine)
    for attempt in range(max_restarts + 1):
        with BFGS(a, logfile=None) as opt:
            if not opt.run(fmax=fmax, steps=steps):
                raise PathError(
                    f"{label}: minimisation did not reach fmax={fmax} eV/Å in "
                    f"{steps} steps"
                )
        hess = a.calc.get_hessian(a)
        modes = vibrations.normal_modes(hess, a.positions, a.get_masses())
        imag = np.flatnonzero(modes.frequencies < -imag_threshold)
        if imag.size == 0:
            return a, hess
        if attempt < max_restarts:
            a.positions = a.positions + 0.1 * modes.cartesian_modes[imag[0]].reshape(
                -1, 3
            )
    raise PathError(
        f"{label}: optimised geometry keeps {imag.size} imaginary mode(s) "
        f"{np.round(modes.frequencies[imag], 1).tolist()} cm⁻¹ after "
        f"{max_restarts} displaced restarts"
    )


def interpolated_guess(
    reactant: Atoms, product: Atoms, engine: Engine, n_images: int = 7
) -> Atoms:
    """Highest-energy interior image of an IDPP interpolation.

    The product is first superimposed on the reactant (proper rotation).

    Args:
        reactant: optimised reactant (Å).
        product: optimised product, same atom order (Å).
        engine: engine used for the image energies.
        n_images: number of interior images.

    Returns:
        The transition-state guess.
    """
    start = Atoms(numbers=reactant.numbers, positions=reactant.positions)
    end = Atoms(
        numbers=product.numbers,
        positions=kabsch_align(product.positions, reactant.positions),
    )
    images = [start] + [start.copy() for _ in range(n_images)] + [end]
    neb = NEB(images, remove_rotation_and_translation=False)
    neb.interpolate(method="idpp")
    energies = [engine.compute(im.numbers, im.positions).energy for im in images[1:-1]]
    best = images[1 + int(np.argmax(energies))]
    return Atoms(numbers=best.numbers, positions=best.positions)


def find_ts(
    guess: Atoms,
    engine: Engine,
    fmax: float = 0.01,
    steps: int = 200,
    imag_threshold: float = 20.0,
    label: str = "transition state",
) -> Tuple[Atoms, np.ndarray]:
    """Refine a guess to a first-order saddle point with Sella.

    Args:
        guess: starting geometry (Å).
        engine: engine; its exact Hessian seeds Sella (``hessian_function``).
        fmax: force convergence in eV/Å.
        steps: maximum Sella steps.
        imag_threshold: imaginary modes with ``|ν|`` below this (cm⁻¹) are noise.
        label: name used in error messages.

    Returns:
        The saddle point and its ``(3N, 3N)`` Hessian in eV/Å².

    Raises:
        PathError: no convergence (or a Sella error), or not exactly one
            imaginary mode.
    """
    from sella import Sella

    a = _attach(guess, engine)
    with optimiser_warnings():
        opt = Sella(
            a,
            order=1,
            internal=True,
            hessian_function=engine.hessian_function(),
            logfile=None,
            trajectory=None,
        )
        try:
            converged = opt.run(fmax=fmax, steps=steps)
        except RuntimeError as err:
            if isinstance(err, (PathError, QCError)):
                raise
            # Sella's own failures ("Geometry update ODE is taking too long to
            # converge!") are a failed search, not a bug to retry
            raise PathError(f"{label}: Sella failed: {err}") from err
    if not converged:
        raise PathError(
            f"{label}: Sella did not converge to fmax={fmax} in {steps} steps"
        )
    hess = a.calc.get_hessian(a)
    freqs = vibrations.frequencies(hess, a.positions, a.get_masses())
    n_imag = int(np.sum(freqs < -imag_threshold))
    if n_imag != 1:
        raise PathError(
            f"{label}: {n_imag} imaginary modes (need exactly 1); lowest "
            f"frequencies {np.round(freqs[:3], 1).tolist()} cm⁻¹"
        )
    return a, hess


@dataclass
class IRCPath:
    """An IRC oriented from reactant to product.

    Attributes:
        positions: ``(P, N, 3)`` path geometries in Å, reactant side first.
        energies: ``(P,)`` energies in eV.
        ts_index: index of the transition state in the path.
    """

    positions: np.ndarray
    energies: np.ndarray
    ts_index: int


def connects(
    numbers: np.ndarray,
    end_a: np.ndarray,
    end_b: np.ndarray,
    reactant: np.ndarray,
    product: np.ndarray,
    rmsd_tol: float = 0.5,
) -> int:
    """Which way an IRC's ends match the reactant and product.

    An end matches a minimum if their covalent bond graphs agree and, unless the
    minimum is a complex of several fragments (whose relative placement is too
    floppy to compare), their RMSD is below ``rmsd_tol``.  If reactant and product
    share a bond graph (conformers, enantiomers), the end must also be closer to
    its own minimum than to the other.

    Args:
        numbers: ``(N,)`` atomic numbers.
        end_a, end_b: ``(N, 3)`` the two IRC end geometries (Å).
        reactant, product: ``(N, 3)`` the optimised minima (Å).
        rmsd_tol: largest RMSD in Å between an IRC end and its minimum.

    Returns:
        ``+1`` if ``end_a`` is the reactant side and ``end_b`` the product side,
        ``-1`` for the opposite, ``0`` if the IRC does not connect them.
    """
    xs = dict(a=end_a, b=end_b, r=reactant, p=product)
    graphs = {k: bond_graph(numbers, x) for k, x in xs.items()}

    def matches(end: str, ref: str, other: str) -> bool:
        if not np.array_equal(graphs[end], graphs[ref]):
            return False
        d = rmsd(xs[end], xs[ref])
        if np.array_equal(graphs[ref], graphs[other]) and d >= rmsd(xs[end], xs[other]):
            return False
        return n_fragments(graphs[ref]) > 1 or d < rmsd_tol

    if matches("a", "r", "p") and matches("b", "p", "r"):
        return 1
    if matches("a", "p", "r") and matches("b", "r", "p"):
        return -1
    return 0


def run_irc(
    ts: Atoms,
    engine: Engine,
    reactant: Atoms,
    product: Atoms,
    dx: float = 0.15,
    steps: int = 25,
    energy_tol: float = 2e-3,
    fmax_inner: float = 0.05,
    fmax_end: float = 0.05,
    label: str = "IRC",
) -> IRCPath:
    """Sella IRC in both directions from the TS, checked against the end points.

    Each branch takes steps of ``dx`` until the energy drops by less than
    ``energy_tol`` per step (the path has reached the basin of a minimum) or
    ``steps`` is reached; its last point is then relaxed (BFGS, not part of the
    path) and must match the reactant or the product (:func:`connects`).

    Args:
        ts: the transition state (Å).
        engine: engine (its Hessian at the TS seeds the IRC).
        reactant, product: optimised minima, atom-mapped to ``ts``.
        dx: IRC step in Å·amu^½ (mass-weighted).
        steps: maximum IRC steps per direction.
        energy_tol: per-step energy decrease in eV below which a branch stops.
        fmax_inner: force tolerance in eV/Å of Sella's constrained inner steps.
        fmax_end: force convergence in eV/Å of the end-point relaxation.
        label: name used in error messages.

    Returns:
        The :class:`IRCPath`, oriented reactant → TS → product.

    Raises:
        PathError: the branches do not end at the reactant and the product.
    """
    from sella import IRC

    a = _attach(ts, engine)
    x_ts = a.positions.copy()
    e_ts = a.get_potential_energy()
    branches = {}
    with optimiser_warnings():
        irc = IRC(
            a,
            logfile=None,
            trajectory=None,
            dx=dx,
            eta=1e-4,
            gamma=0.0,
            keep_going=True,
            hessian_function=engine.hessian_function(),
        )
        for direction in ("forward", "reverse"):
            pts: List[Tuple[np.ndarray, float]] = []
            e_last = e_ts
            for converged in irc.irun(
                fmax=fmax_end, fmax_inner=fmax_inner, steps=steps, direction=direction
            ):
                if np.abs(a.positions - x_ts).max() < 1e-8:
                    continue
                e = a.get_potential_energy()
                pts.append((a.positions.copy(), e))
                if converged or e_last - e < energy_tol:
                    break
                e_last = e
            if not pts:
                raise PathError(f"{label}: {direction} branch made no step")
            branches[direction] = pts
    ends = {}
    for direction, pts in branches.items():
        end = _attach(Atoms(numbers=a.numbers, positions=pts[-1][0]), engine)
        with BFGS(end, logfile=None) as opt:
            opt.run(fmax=fmax_end, steps=100)
        ends[direction] = end.positions.copy()
    fwd, rev = branches["forward"], branches["reverse"]
    way = connects(
        a.numbers,
        ends["reverse"],
        ends["forward"],
        reactant.positions,
        product.positions,
    )
    if way == 0:
        raise PathError(
            f"{label}: the IRC does not connect reactant and product (relaxed ends vs "
            f"minima: reverse-reactant "
            f"{rmsd(ends['reverse'], reactant.positions):.2f} Å, forward-product "
            f"{rmsd(ends['forward'], product.positions):.2f} Å, reverse-product "
            f"{rmsd(ends['reverse'], product.positions):.2f} Å, reactant-product "
            f"{rmsd(reactant.positions, product.positions):.2f} Å)"
        )
    first, last = (rev, fwd) if way == 1 else (fwd, rev)
    ordered = first[::-1] + [(x_ts, e_ts)] + last
    return IRCPath(
        positions=np.array([p for p, _ in ordered]),
        energies=np.array([e for _, e in ordered]),
        ts_index=len(first),
    )
