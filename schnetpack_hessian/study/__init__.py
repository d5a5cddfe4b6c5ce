"""The reference study's comparison, reproduced (``spkhess-study``).

- :mod:`.matrix`: the arms (targets × model × Hessian mode × data fraction × seed ×
  fold) and the shared training budget; :func:`quick_plan`, :func:`full_plan`.
- :mod:`.splits`: by-reaction folds, critical points to train on, the two test sets.
- :mod:`.runner`: one spktrain run per arm, one at a time, resumable.
- :mod:`.scoring`: ``spkhess-eval``'s metrics of a trained run on its test sets.
- :mod:`.aggregate`, :mod:`.goals`, :mod:`.figures`, :mod:`.report`: mean ± sd over
  seeds and folds, the issue's goals, plots and ``RESULTS.md``.
- :mod:`.balancing`, :mod:`.cost`: variance-balanced loss weights and the per-epoch
  cost record, callbacks used by the recipe (``loss=variance``,
  ``experiment=study_recipe``).
"""

from schnetpack_hessian.study.matrix import (
    Arm,
    Budget,
    StudyPlan,
    full_plan,
    quick_plan,
)
from schnetpack_hessian.study.runner import (
    StudyError,
    load_study_data,
    read_results,
    StudyContext,
    run_arm,
    run_study,
)

__all__ = [
    "Arm",
    "Budget",
    "StudyError",
    "StudyPlan",
    "full_plan",
    "load_study_data",
    "quick_plan",
    "read_results",
    "StudyContext",
    "run_arm",
    "run_study",
]
