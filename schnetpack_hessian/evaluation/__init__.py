"""Evaluation of trained models: errors and what a Hessian-trained model buys downstream.

- :func:`evaluate`: E/F/H MAE and RMSE over data-loader batches (the training units).
- :func:`load_model`, :func:`load_structures`, :func:`predict`: a trained model, any
  data file ``spkhess-convert`` reads, and batched exact-Hessian predictions.
- :func:`compare_hessians`: eigenvalues, TS-mode cosines, projected harmonic
  frequencies, imaginary-mode counts and zero-point energies.
- :func:`reaction_paths`, :func:`barrier_rows`, :func:`irc_profile`: barriers and
  energy profiles along the reference IRC.
- :func:`ts_search`, :func:`ts_searches`: Sella saddle searches with the model's
  exact Hessian and with Sella's own updates.
- :func:`evaluate_downstream`: all of the above for one model (``spkhess-eval``).
"""

from schnetpack_hessian.evaluation.errors import evaluate
from schnetpack_hessian.evaluation.model import (
    EvaluationError,
    EvaluationModel,
    load_model,
)
from schnetpack_hessian.evaluation.data import load_structures
from schnetpack_hessian.evaluation.predict import Prediction, predict
from schnetpack_hessian.evaluation.spectra import HessianComparison, compare_hessians
from schnetpack_hessian.evaluation.reactions import (
    IRCProfile,
    ReactionPath,
    barrier_rows,
    irc_profile,
    reaction_paths,
)
from schnetpack_hessian.evaluation.tssearch import (
    TSSearchResult,
    TSSearchSettings,
    ts_search,
    ts_searches,
)
from schnetpack_hessian.evaluation.downstream import (
    DownstreamReport,
    evaluate_downstream,
)

__all__ = [
    "DownstreamReport",
    "EvaluationError",
    "EvaluationModel",
    "HessianComparison",
    "IRCProfile",
    "Prediction",
    "ReactionPath",
    "TSSearchResult",
    "TSSearchSettings",
    "barrier_rows",
    "compare_hessians",
    "evaluate",
    "evaluate_downstream",
    "irc_profile",
    "load_model",
    "load_structures",
    "predict",
    "reaction_paths",
    "ts_search",
    "ts_searches",
]
