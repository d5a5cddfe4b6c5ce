"""TS searches with the shipped models from the end points of the GFN2-xTB set's first
reactions, as docs/APPLICATIONS.md runs one: IDPP guess, Sella with the model's exact
Hessian at every step, the model's IRC. Prints a table row per model.

    python studies/pretrained_ts_searches.py [N_REACTIONS]
"""

import sys

import numpy as np
from sella import Sella

from schnetpack_hessian.data import iread
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.evaluation.model import load_model
from schnetpack_hessian.evaluation.tsguess import interpolated_guess, irc_connects
from schnetpack_hessian.vibrations import normal_modes

MODELS = ("chon-xtb-ef", "chon-xtb-efh")


def search(calc, reactant, product):
    """(converged, steps, one imaginary mode, IRC connects) of one search."""
    guess, _ = interpolated_guess(reactant, product, calc)
    guess.calc = calc
    opt = Sella(
        guess,
        order=1,
        internal=True,
        hessian_function=calc.get_hessian,
        diag_every_n=1,
        logfile=None,
    )
    converged = opt.run(fmax=0.01, steps=200)
    freqs = normal_modes(
        calc.get_hessian(guess), guess.positions, guess.get_masses()
    ).frequencies
    one_imaginary = bool(freqs[0] < 0 and freqs[1] > 0)
    connects = irc_connects(guess, reactant, product, calc, calc.get_hessian)
    return converged, opt.nsteps, one_imaginary, connects, freqs[:2]


def main(n_reactions: int) -> None:
    structures = list(iread(reactive_set_path("xtb")))
    ids = sorted({a.info["reaction"] for a in structures})[:n_reactions]
    ends = {
        r: tuple(
            next(
                a for a in structures if a.info["reaction"] == r and a.info["kind"] == k
            )
            for k in ("reactant", "product")
        )
        for r in ids
    }
    rows = []
    for name in MODELS:
        calc = load_model(f"pretrained:{name}").calculator()
        results = []
        for r in ids:
            result = search(calc, *ends[r])
            print(name, "reaction", r, *result, flush=True)
            results.append(result)
        n = len(results)
        rows.append(
            f"| `{name}` | {sum(x[0] for x in results)} of {n} "
            f"| {sum(x[2] for x in results)} of {n} | {sum(x[3] for x in results)} of {n} |"
        )
    print("reactions", ids)
    print("| model | Sella converged | one imaginary mode | IRC connects |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
