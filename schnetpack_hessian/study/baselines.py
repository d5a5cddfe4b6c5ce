"""Reference predictors that need no training, for reading the study's error tables.

The study trains on critical points only, where the reference forces vanish (up to
the optimiser's tolerance).  A model trained on such forces has only learnt that the
forces are zero there, so its force MAE on other geometries is to be compared with
that of the predictor that says "zero force" everywhere: the mean absolute reference
force component of the test set.  The harmonic predictor shows what the reference
Hessians could buy: ``F ≈ F_c − H_c·(x − x_c)`` from the structure's parent critical
point ``c`` (the critical point of its reaction with the smallest RMSD), with ``x``
superimposed on ``x_c`` (files store structures in frames of their own) and the
forces rotated back.
"""

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.generate.geometry import kabsch_rotation, rmsd
from schnetpack_hessian.quantities import Dimension, Quantity
from schnetpack_hessian.study.aggregate import Stat, stat
from schnetpack_hessian.study.runner import StudyData
from schnetpack_hessian.study.scoring import STUDY_UNITS
from schnetpack_hessian.study.splits import make_split
from schnetpack_hessian.study.subsample import scored_subset

__all__ = [
    "mean_abs_force",
    "harmonic_forces",
    "harmonic_force_mae",
    "zero_force_baseline",
    "harmonic_force_baseline",
]


def _study_force(mean_abs: float) -> float:
    """A force MAE in eV/Å in the study's units (kcal/mol/Å)."""
    return Quantity(mean_abs, Dimension.FORCE).to(STUDY_UNITS)


def mean_abs_force(
    structures: Sequence[HessianRecord], labels: Optional[Sequence[str]] = None
) -> float:
    """Mean absolute force component over ``structures`` (kcal/mol/Å): the force MAE
    of predicting zero force everywhere, pooled over all components as the study's
    force MAE is.

    Args:
        structures: records with forces ``(N, 3)`` in eV/Å.
        labels: how errors name each structure (default: its position).

    Raises:
        ValueError: no structures, or a structure without forces.
    """
    if not structures:
        raise ValueError("mean_abs_force: no structures")
    parts = []
    for i, record in enumerate(structures):
        if record.forces is None:
            label = labels[i] if labels else f"mean_abs_force: structure {i}"
            raise ValueError(f"{label} has no forces")
        parts.append(np.abs(record.forces).ravel())
    return _study_force(np.concatenate(parts).mean())


def harmonic_forces(parent: HessianRecord, positions: np.ndarray) -> np.ndarray:
    """``F_c − H_c·(x − x_c)`` (eV/Å, ``(N, 3)``, in the frame of ``positions``)
    from the critical point ``parent`` (its forces ``(N, 3)`` eV/Å and Hessian
    ``(3N, 3N)`` eV/Å²) at ``positions`` ``(N, 3)`` (Å), superimposed on the parent
    first."""
    rot, c_mobile, c_parent = kabsch_rotation(positions, parent.positions)
    aligned = (np.asarray(positions, dtype=np.float64) - c_mobile) @ rot + c_parent
    dx = (aligned - parent.positions).reshape(-1)
    hessian = np.asarray(parent.hessian, dtype=np.float64)
    forces = parent.forces - (hessian @ dx).reshape(-1, 3)
    return forces @ rot.T


def _parent(data: StudyData, index: int) -> Optional[int]:
    """The critical point of ``index``'s reaction with the smallest RMSD to it
    (``None``: ``index`` is a critical point, or its reaction has none with a
    Hessian)."""
    critical = [P.KINDS.index(k) for k in P.CRITICAL_KINDS]
    if data.kinds[index] in critical or data.reactions[index] < 0:
        return None
    x = data.structures[index].positions
    candidates = [
        j
        for j in np.flatnonzero(data.reactions == data.reactions[index])
        if data.kinds[j] in critical
        and data.structures[j].hessian is not None
        and data.structures[j].n_atoms == len(x)
    ]
    if not candidates:
        return None
    return int(min(candidates, key=lambda j: rmsd(x, data.structures[j].positions)))


def harmonic_force_mae(data: StudyData, indices: Sequence[int]) -> Tuple[float, int]:
    """Force MAE (kcal/mol/Å, pooled over components) of the harmonic predictor over
    the structures of ``indices`` that have a parent critical point, and their count.
    """
    errors = []
    for i in indices:
        parent = _parent(data, int(i))
        if parent is None:
            continue
        record = data.structures[i]
        predicted = harmonic_forces(data.structures[parent], record.positions)
        errors.append(np.abs(predicted - record.forces).ravel())
    if not errors:
        return float("nan"), 0
    return _study_force(np.concatenate(errors).mean()), len(errors)


def _test_sets(
    data: StudyData, n_folds: int, fold: int, score_per_set: int
) -> Dict[str, List[int]]:
    """The two test sets of ``fold`` as scored (the subsample when the budget has
    one); they depend on the fold only, not on the seed or the training fraction."""
    split = make_split(data.kinds, data.reactions, n_folds, fold, seed=0)
    return {
        name: scored_subset(
            getattr(split, name), data.kinds, data.reactions, score_per_set, fold
        )
        for name in ("train_offpath", "heldout")
    }


def zero_force_baseline(
    data: StudyData, n_folds: int, folds: Iterable[int], score_per_set: int = 0
) -> Dict[str, Stat]:
    """``{test set: force MAE of the zero-force predictor}`` over ``folds`` (mean ±
    sd over the folds; kcal/mol/Å), on the structures the runs are scored on.

    Raises:
        ValueError: a test structure without forces (named by its index in the file).
    """
    values: Dict[str, List[float]] = {"train_offpath": [], "heldout": []}
    for fold in sorted(set(folds)):
        for name, indices in _test_sets(data, n_folds, fold, score_per_set).items():
            if not indices:
                continue
            labels = [f"{data.path}: structure {i} (test set {name})" for i in indices]
            values[name].append(mean_abs_force(data.subset(indices), labels))
    return {name: stat(v) for name, v in values.items()}


def harmonic_force_baseline(
    data: StudyData, n_folds: int, folds: Iterable[int], score_per_set: int = 0
) -> Dict[str, Stat]:
    """``{test set: force MAE of the harmonic predictor}`` over ``folds`` (mean ± sd
    over the folds; kcal/mol/Å), over the scored structures that are not critical
    points (:func:`harmonic_force_mae`)."""
    values: Dict[str, List[float]] = {"train_offpath": [], "heldout": []}
    for fold in sorted(set(folds)):
        for name, indices in _test_sets(data, n_folds, fold, score_per_set).items():
            mae, count = harmonic_force_mae(data, indices)
            if count:
                values[name].append(mae)
    return {name: stat(v) for name, v in values.items()}
