"""The zero-force reference predictor of the study's tables."""

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.record import HessianRecord, record_from_atoms
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.study.baselines import mean_abs_force, zero_force_baseline
from schnetpack_hessian.study.runner import load_study_data
from schnetpack_hessian.study.splits import make_split


def _with_forces(forces):
    n = len(forces)
    return HessianRecord(np.ones(n, int), np.zeros((n, 3)), 0.0, np.array(forces))


def test_mean_abs_force_pools_components_in_kcal_per_mol_angstrom():
    one = _with_forces([[1.0, -1.0, 0.0]])  # eV/Å
    two = _with_forces([[0.0, 0.0, 2.0], [0.0, 0.0, -4.0]])
    kcal = units.kcal / units.mol
    # 9 components: |1|+|-1|+|2|+|-4| = 8 eV/Å
    assert mean_abs_force([one, two]) == pytest.approx(8.0 / 9.0 / kcal)


def test_structures_without_forces_are_refused():
    with pytest.raises(ValueError, match="structure 0 has no forces"):
        mean_abs_force([HessianRecord(np.ones(2, int), np.eye(2, 3), 0.0, None)])
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
    structures[victim] = replace(structures[victim], forces=None)
    broken = replace(data, structures=structures)
    with pytest.raises(ValueError, match=rf"reactive_chon.h5: structure {victim} "):
        zero_force_baseline(broken, n_folds=3, folds=[0])


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _quadratic_reaction():
    """A TS and two IRC points on a quadratic surface around it whose Hessian obeys
    the rigid-motion sum rules; each IRC point stored rotated and shifted, as files
    store structures in frames of their own."""
    from schnetpack_hessian.study.runner import StudyData

    rng = np.random.default_rng(0)
    x0 = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.3, 0.9, 0.0]])
    rigid = [np.tile(np.eye(3)[k], 3) for k in range(3)]
    rigid += [np.cross(np.eye(3)[k], x0 - x0.mean(0)).ravel() for k in range(3)]
    q, _ = np.linalg.qr(np.array(rigid).T)
    internal = np.eye(9) - q @ q.T
    a = rng.normal(size=(9, 9))
    hessian = internal @ (a @ a.T - 3.0 * np.eye(9)) @ internal
    structures, kinds = [], []
    for k, kind in enumerate(("ts", "irc", "irc")):
        dx = np.zeros(9) if kind == "ts" else 1e-3 * internal @ rng.normal(size=9)
        forces = -(hessian @ dx).reshape(3, 3)
        rot, shift = (np.eye(3), 0.0) if kind == "ts" else (_rotation(k), 2.0 * k)
        atoms = Atoms("OH2", positions=(x0 + np.reshape(dx, (3, 3))) @ rot + shift)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=forces @ rot)
        atoms.info.update(kind=kind, reaction=0, hessian=hessian)
        structures.append(record_from_atoms(atoms))
        kinds.append(P.KINDS.index(kind))
    data = StudyData(
        "quadratic", structures, np.array(kinds), np.zeros(3, int), {0: "q"}, False
    )
    return data, hessian


def test_harmonic_predictor_is_exact_on_a_quadratic_surface():
    from schnetpack_hessian.study.baselines import harmonic_force_mae, harmonic_forces

    data, hessian = _quadratic_reaction()
    scale = mean_abs_force(data.subset([1, 2]))
    mae, count = harmonic_force_mae(data, [0, 1, 2])
    assert count == 2 and mae < 1e-3 * scale  # the TS has no parent
    ts, irc = data.structures[0], data.structures[1]
    np.testing.assert_allclose(
        harmonic_forces(ts, irc.positions),
        irc.forces,
        atol=1e-3 * np.abs(irc.forces).max(),
    )
    ts.hessian = -hessian  # a Hessian of the wrong sign is caught
    assert harmonic_force_mae(data, [1, 2])[0] > 1.5 * scale


def test_harmonic_reference_beats_zero_force_near_critical_points():
    """On the shipped set's structures within 0.1 Å RMSD of their critical point the
    reference Hessians predict the forces far better than zero (in whatever frame
    each structure is stored); farther out anharmonicity takes over."""
    from schnetpack_hessian.generate.geometry import rmsd
    from schnetpack_hessian.study.baselines import (
        _parent,
        harmonic_force_baseline,
        harmonic_force_mae,
    )

    data = load_study_data(reactive_set_path())
    near = []
    for i in range(len(data.structures)):
        parent = _parent(data, i)
        if (
            parent is not None
            and rmsd(data.structures[i].positions, data.structures[parent].positions)
            < 0.1
        ):
            near.append(i)
    assert len(near) > 50
    mae, count = harmonic_force_mae(data, near)
    assert count == len(near)
    assert mae < 0.4 * mean_abs_force(data.subset(near))
    harmonic = harmonic_force_baseline(data, n_folds=3, folds=[0, 1, 2])
    assert harmonic["train_offpath"].n == 3 and harmonic["heldout"].n == 3
