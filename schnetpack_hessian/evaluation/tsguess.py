"""TS searches the way users run them: from a reaction's reactant and product.

The product is superimposed on the reactant (Kabsch, atoms mapped by index), an
image-dependent pair potential (IDPP) path is interpolated between them, and the
interior image the model puts highest in energy is the guess a saddle search starts
from.  After a search, :func:`irc_connects` follows the model's IRC down both sides
of the saddle it found and relaxes each end: the search found the *intended* TS when
the two ends have the reactant's and the product's bond graphs (ReactBench's test).
"""

from typing import Optional, Tuple

import numpy as np
from ase import Atoms
from ase.build import minimize_rotation_and_translation
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS

from schnetpack_hessian.quiet import optimiser_warnings
from schnetpack_hessian.generate.geometry import bond_graph

__all__ = ["interpolated_guess", "irc_ends", "irc_connects"]


def interpolated_guess(
    reactant: Atoms, product: Atoms, calc: Calculator, n_images: int = 9
) -> Tuple[Atoms, int]:
    """The highest-energy interior image (on ``calc``) of the IDPP path.

    Args:
        reactant, product: end points with the same atoms in the same order (Å).
        calc: the model's calculator (energies only are asked for).
        n_images: interior images of the path.

    Returns:
        ``(guess, k)``: a fresh ``Atoms`` of the guess and its image index
        (1..n_images).

    Raises:
        ValueError: the end points do not hold the same atoms in the same order.
    """
    from ase.mep import NEB

    if not np.array_equal(reactant.numbers, product.numbers):
        raise ValueError(
            "interpolated_guess: reactant and product hold different atoms "
            f"({reactant.get_chemical_formula()} vs {product.get_chemical_formula()}, "
            "or another order); the path needs atom-mapped end points"
        )
    start = Atoms(reactant.numbers, reactant.positions)
    end = Atoms(product.numbers, product.positions)
    minimize_rotation_and_translation(start, end)
    images = [start] + [start.copy() for _ in range(n_images)] + [end]
    with optimiser_warnings():
        NEB(images).interpolate(method="idpp")
    energies = []
    for image in images[1:-1]:
        image.calc = calc
        energies.append(image.get_potential_energy())
    k = int(np.argmax(energies)) + 1
    return Atoms(images[k].numbers, images[k].positions), k


def _relaxed(atoms: Atoms, calc: Calculator, fmax: float, steps: int) -> Atoms:
    atoms = Atoms(atoms.numbers, atoms.positions)
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    return atoms


def irc_ends(
    ts: Atoms,
    calc: Calculator,
    hessian_function=None,
    irc_steps: int = 60,
    dx: float = 0.1,
    relax_fmax: float = 0.05,
    relax_steps: int = 300,
) -> Optional[Tuple[Atoms, Atoms]]:
    """Both ends of the model's IRC from the saddle ``ts``, each relaxed to a minimum.

    Sella's IRC (mass-weighted, step ``dx`` Å·amu½) runs forward and in reverse for at
    most ``irc_steps`` steps each, then BFGS relaxes each end (``relax_fmax`` eV/Å).

    Returns:
        The two relaxed ends, or ``None`` where Sella's IRC failed numerically.
    """
    from sella import IRC

    extra = {} if hessian_function is None else {"hessian_function": hessian_function}
    atoms = Atoms(ts.numbers, ts.positions)
    atoms.calc = calc
    ends = []
    with optimiser_warnings():
        try:
            irc = IRC(atoms, logfile=None, trajectory=None, dx=dx, gamma=0, **extra)
            for direction in ("forward", "reverse"):
                irc.run(fmax=0.1, steps=irc_steps, direction=direction)
                ends.append(_relaxed(atoms, calc, relax_fmax, relax_steps))
        except (np.linalg.LinAlgError, ValueError, RuntimeError):
            return None
    return ends[0], ends[1]


def irc_connects(
    ts: Atoms,
    reactant: Atoms,
    product: Atoms,
    calc: Calculator,
    hessian_function=None,
    **kwargs,
) -> bool:
    """Whether the model's IRC from ``ts`` leads to ``reactant`` and ``product``:
    the relaxed ends' bond graphs (:func:`~..generate.geometry.bond_graph`, atoms
    mapped by index) are the reactant's and the product's, in either order.

    Keyword arguments go to :func:`irc_ends`.
    """
    ends = irc_ends(ts, calc, hessian_function, **kwargs)
    if ends is None:
        return False
    graphs = [bond_graph(a.numbers, a.positions) for a in ends]
    ref_r = bond_graph(reactant.numbers, reactant.positions)
    ref_p = bond_graph(product.numbers, product.positions)
    forward = np.array_equal(graphs[0], ref_r) and np.array_equal(graphs[1], ref_p)
    backward = np.array_equal(graphs[0], ref_p) and np.array_equal(graphs[1], ref_r)
    return bool(forward or backward)
