"""TS search from a reaction's end points (IDPP guess → Sella → IRC check) on the LEPS
surface of H + H2 → H2 + H, whose saddle is known: the symmetric linear H3."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from scipy.optimize import minimize_scalar

from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.evaluation.tsguess import interpolated_guess, irc_connects
from schnetpack_hessian.evaluation.tssearch import (
    ENDPOINTS,
    TSSearchSettings,
    TSStart,
    summarize_ts_searches,
    ts_search,
    ts_starts,
)
from schnetpack_hessian.evaluation.reactions import reaction_paths

pytest.importorskip("sella")

#: LEPS parameters of H3 (eV, Å⁻¹, Å, Sato parameter).
D, ALPHA, R0, SATO = 4.746, 1.942, 0.742, 0.106


def leps_energy(x: torch.Tensor) -> torch.Tensor:
    """LEPS energy (eV) of three H atoms at ``x`` (3, 3) Å."""

    def coulomb_exchange(r):
        e1, e2 = torch.exp(-ALPHA * (r - R0)), torch.exp(-2 * ALPHA * (r - R0))
        c = D / (4 * (1 + SATO))
        q = c * ((3 + SATO) * e2 - (2 + 6 * SATO) * e1)
        j = c * ((1 + 3 * SATO) * e2 - (6 + 2 * SATO) * e1)
        return q, j

    r = [torch.linalg.norm(x[i] - x[j]) for i, j in ((0, 1), (1, 2), (0, 2))]
    (qa, ja), (qb, jb), (qc, jc) = (coulomb_exchange(v) for v in r)
    exchange = ja**2 + jb**2 + jc**2 - ja * jb - jb * jc - ja * jc
    return qa + qb + qc - torch.sqrt(exchange)


class LEPSCalculator(Calculator):
    """The LEPS surface with exact autograd forces and Hessian (float64), counting
    calls like ``HessianCalculator``; ``hessian_sign=-1`` is a model whose Hessian
    has the wrong sign."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, hessian_sign: float = 1.0):
        super().__init__()
        self.hessian_sign = hessian_sign
        self.n_calls = {"forces": 0, "hessian": 0}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = torch.tensor(self.atoms.positions, dtype=torch.float64, requires_grad=True)
        energy = leps_energy(x)
        (grad,) = torch.autograd.grad(energy, x)
        self.results = {"energy": float(energy), "forces": -grad.numpy()}
        self.n_calls["forces"] += 1

    def get_hessian(self, atoms: Atoms) -> np.ndarray:
        x = torch.tensor(atoms.positions, dtype=torch.float64)
        h = torch.autograd.functional.hessian(leps_energy, x).reshape(9, 9).numpy()
        self.n_calls["hessian"] += 1
        return self.hessian_sign * h


@pytest.fixture(scope="module")
def reaction():
    """Reactant H2···H, product H···H2 (bent, atom-mapped) and the reference TS."""

    def symmetric(r):
        x = torch.tensor([[-r, 0, 0], [0, 0, 0], [r, 0, 0]], dtype=torch.float64)
        return float(leps_energy(x))

    r_ts = minimize_scalar(symmetric, bounds=(0.6, 1.5), method="bounded").x
    reactant = Atoms("H3", [[0, 0, 0], [0.742, 0, 0], [2.342, 0.3, 0]])
    product = Atoms("H3", [[-1.6, 0.3, 0], [0, 0, 0], [0.742, 0, 0]])
    ts = Atoms("H3", [[-r_ts, 0, 0], [0, 0, 0], [r_ts, 0, 0]])
    return reactant, product, ts


SETTINGS = TSSearchSettings(endpoint_starts=True, n_perturbations=0, max_steps=40)


def _start(reaction, product=None):
    reactant, good_product, ts = reaction
    return TSStart(0, ENDPOINTS, None, ts, reactant, product or good_product)


def test_guess_is_the_path_maximum_between_the_end_points(reaction):
    reactant, product, ts = reaction
    guess, k = interpolated_guess(reactant, product, LEPSCalculator(), n_images=9)
    assert 1 <= k <= 9
    d = guess.get_all_distances()
    # near the middle of the path: both H-H distances stretched, the outer one long
    assert 0.8 < d[0, 1] < 1.6 and 0.8 < d[1, 2] < 1.6
    with pytest.raises(ValueError, match="atom-mapped"):
        interpolated_guess(reactant, Atoms("H2", [[0, 0, 0], [0.7, 0, 0]]), None)


@pytest.mark.parametrize("method", ["model_hessian", "sella_updates"])
def test_endpoint_search_finds_the_intended_saddle(reaction, method):
    result = ts_search(LEPSCalculator(), _start(reaction), method, SETTINGS)
    assert result.converged and result.n_imaginary == 1
    assert result.rmsd < 0.01 and result.intended is True and result.success
    assert result.force_calls >= result.steps + 9  # the guess's 9 energies counted
    summary = summarize_ts_searches([result])
    assert summary[f"{ENDPOINTS}_{method}"]["success_rate"] == 1.0


def test_wrong_hessian_sign_fails(reaction):
    result = ts_search(
        LEPSCalculator(hessian_sign=-1.0), _start(reaction), "model_hessian", SETTINGS
    )
    assert not result.success and result.n_imaginary != 1


def test_irc_check_rejects_a_saddle_of_another_reaction(reaction):
    """The saddle is right, but the product given is another reaction's (H1–H3
    bonded): the model's IRC does not lead there, so the search is not intended."""
    reactant, _, ts = reaction
    other = Atoms("H3", [[0, 0, 0], [2.0, 0.4, 0], [0.742, 0, 0]])
    assert irc_connects(ts, reactant, reaction[1], LEPSCalculator())
    assert not irc_connects(ts, reactant, other, LEPSCalculator())
    result = ts_search(
        LEPSCalculator(), _start(reaction, other), "sella_updates", SETTINGS
    )
    assert result.converged and result.n_imaginary == 1 and result.rmsd < 0.01
    assert result.intended is False and not result.success


def test_endpoint_starts_and_a_seeded_reaction_subset():
    structures = []
    for rid in range(5):
        for kind, x in (("reactant", 0.0), ("ts", 0.5), ("product", 1.0)):
            positions = np.array([[0, 0, 0], [0.7 + x, 0, 0]])
            structures.append(
                HessianRecord(np.ones(2, int), positions, None, None, None, kind, rid)
            )
    paths = reaction_paths(structures)
    settings = TSSearchSettings(
        endpoint_starts=True, n_perturbations=1, max_reactions=3
    )
    starts = ts_starts(structures, paths, settings)
    reactions = sorted({s.reaction for s in starts})
    assert len(reactions) == 3
    assert [s.label for s in starts if s.reaction == reactions[0]] == [
        ENDPOINTS,
        "perturbed-0",
    ]
    assert reactions == sorted(
        {s.reaction for s in ts_starts(structures, paths, settings)}
    )
