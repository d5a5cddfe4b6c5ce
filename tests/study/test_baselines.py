"""The zero-force reference predictor of the study's tables."""

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from schnetpack_hessian import properties as P
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.study.baselines import mean_abs_force, zero_force_baseline
from schnetpack_hessian.study.runner import load_study_data
from schnetpack_hessian.study.splits import make_split


def _with_forces(forces):
    atoms = Atoms("H" * len(forces), positions=np.zeros((len(forces), 3)))
    atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.array(forces))
    return atoms


def test_mean_abs_force_pools_components_in_kcal_per_mol_angstrom():
    one = _with_forces([[1.0, -1.0, 0.0]])  # eV/Å
    two = _with_forces([[0.0, 0.0, 2.0], [0.0, 0.0, -4.0]])
    kcal = units.kcal / units.mol
    # 9 components: |1|+|-1|+|2|+|-4| = 8 eV/Å
    assert mean_abs_force([one, two]) == pytest.approx(8.0 / 9.0 / kcal)


def test_structures_without_forces_are_refused():
    with pytest.raises(ValueError, match="structure 0 has no forces"):
        mean_abs_force([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])])
    with pytest.raises(ValueError, match="no structures"):
        mean_abs_force([])


def test_zero_force_baseline_on_the_shipped_set():
    data = load_study_data(reactive_set_path())
    base = zero_force_baseline(data, n_folds=3, folds=[2, 0, 1, 0])
    assert base["train_offpath"].n == 3 and base["heldout"].n == 3
    # the folds' sets by hand: the mean over folds of each set's mean |F|
    by_hand = []
    for fold in range(3):
        split = make_split(data.kinds, data.reactions, 3, fold, seed=5)
        by_hand.append(mean_abs_force(data.subset(split.train_offpath)))
    assert base["train_offpath"].mean == pytest.approx(np.mean(by_hand))
    # off-path geometries carry forces; the critical points trained on do not
    critical = [i for i, k in enumerate(data.kinds) if P.KINDS[k] in P.CRITICAL_KINDS]
    assert mean_abs_force(data.subset(critical)) < 0.05 * base["train_offpath"].mean


def test_a_test_structure_without_forces_is_named_with_its_file(tmp_path):
    from dataclasses import replace

    data = load_study_data(reactive_set_path())
    split = make_split(data.kinds, data.reactions, 3, 0, seed=0)
    structures = list(data.structures)
    victim = split.heldout[2]
    structures[victim] = structures[victim].copy()  # positions only, no results
    structures[victim].calc = None
    broken = replace(data, structures=structures)
    with pytest.raises(ValueError, match=rf"reactive_chon.h5: structure {victim} "):
        zero_force_baseline(broken, n_folds=3, folds=[0])
