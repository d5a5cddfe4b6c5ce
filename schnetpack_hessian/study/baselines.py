"""Reference predictors that need no training, for reading the study's error tables.

The study trains on critical points only, where the reference forces vanish (up to
the optimiser's tolerance).  A model trained on such forces has only learnt that the
forces are zero there, so its force MAE on other geometries is to be compared with
that of the predictor that says "zero force" everywhere: the mean absolute reference
force component of the test set.
"""

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from ase import Atoms, units

from schnetpack_hessian.study.aggregate import Stat, stat
from schnetpack_hessian.study.runner import StudyData
from schnetpack_hessian.study.splits import make_split

__all__ = ["mean_abs_force", "zero_force_baseline"]

#: kcal/mol per eV.
_KCAL_PER_EV = 1.0 / (units.kcal / units.mol)


def mean_abs_force(
    structures: Sequence[Atoms], labels: Optional[Sequence[str]] = None
) -> float:
    """Mean absolute force component over ``structures`` (kcal/mol/Å): the force MAE
    of predicting zero force everywhere, pooled over all components as the study's
    force MAE is.

    Args:
        labels: how errors name each structure (default: its position).

    Raises:
        ValueError: no structures, or a structure without forces.
    """
    if not structures:
        raise ValueError("mean_abs_force: no structures")
    parts = []
    for i, atoms in enumerate(structures):
        if atoms.calc is None or "forces" not in atoms.calc.results:
            label = labels[i] if labels else f"mean_abs_force: structure {i}"
            raise ValueError(f"{label} has no forces")
        parts.append(np.abs(atoms.get_forces()).ravel())
    return float(np.concatenate(parts).mean() * _KCAL_PER_EV)


def zero_force_baseline(
    data: StudyData, n_folds: int, folds: Iterable[int]
) -> Dict[str, Stat]:
    """``{test set: force MAE of the zero-force predictor}`` over ``folds`` (mean ±
    sd over the folds; kcal/mol/Å).  The test sets depend on the fold only, not on
    the seed or the training fraction.

    Raises:
        ValueError: a test structure without forces (named by its index in the file).
    """
    values: Dict[str, List[float]] = {"train_offpath": [], "heldout": []}
    for fold in sorted(set(folds)):
        split = make_split(data.kinds, data.reactions, n_folds, fold, seed=0)
        for name in values:
            indices = getattr(split, name)
            if not indices:
                continue
            labels = [f"{data.path}: structure {i} (test set {name})" for i in indices]
            values[name].append(mean_abs_force(data.subset(indices), labels))
    return {name: stat(v) for name, v in values.items()}
