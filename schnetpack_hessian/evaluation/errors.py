"""Errors of a trained model on a data set: energy, forces and Hessian.

Units are those of the data loader's properties (the data module's ``property_units``,
e.g. kcal/mol, kcal/mol/Å and kcal/mol/Å² as in the reference study).
"""

from typing import Dict, Iterable

import torch

import schnetpack.properties as spk_properties

from schnetpack_hessian import properties
from schnetpack_hessian.hessian import was_computed
from schnetpack_hessian.losses import hessian_errors

__all__ = ["evaluate"]


def _accumulate(
    stats: Dict[str, float], key: str, sae: float, sse: float, n: float
) -> None:
    """Add a batch's sum of absolute errors, of squared errors and entry count."""
    for suffix, value in (("_sae", sae), ("_sse", sse), ("_n", n)):
        stats[key + suffix] = stats.get(key + suffix, 0.0) + value


def _accumulate_differences(
    stats: Dict[str, float], key: str, diff: torch.Tensor
) -> None:
    diff = diff.detach().double()
    _accumulate(
        stats, key, float(diff.abs().sum()), float(diff.pow(2).sum()), diff.numel()
    )


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Dict[str, torch.Tensor]],
    energy_key: str = spk_properties.energy,
    force_key: str = spk_properties.forces,
    hessian_key: str = properties.hessian,
) -> Dict[str, float]:
    """MAE and RMSE of energy, forces and Hessian over all batches.

    The model runs in eval mode without postprocessing, exactly as in validation, so
    predictions and targets share the data module's transforms and units.  Hessian
    errors are pooled over all entries of the structures that have a Hessian; they need
    a full Hessian from the model (``Hessian(mode="full")`` or ``schedule={"evaluation": "full"}``).

    Returns:
        ``{"energy_mae", "energy_rmse", "forces_mae", ..., "hessian_rmse", "n_structures"}``
        (keys present for the properties the model predicts and the data holds).
    """
    was_training = model.training
    postprocessing = getattr(model, "do_postprocessing", False)
    model.eval()
    if hasattr(model, "do_postprocessing"):
        model.do_postprocessing = False
    device = next(model.parameters()).device
    stats: Dict[str, float] = {}
    n_structures = 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.enable_grad():
                pred = model(dict(batch))
            n_structures += len(batch[spk_properties.n_atoms])
            for key in (energy_key, force_key):
                if key in pred and key in batch:
                    _accumulate_differences(stats, key, pred[key] - batch[key])
            if hessian_key in batch and was_computed(pred, hessian_key):
                err = hessian_errors(pred, batch[hessian_key], hessian_key)
                v = err.valid
                _accumulate(
                    stats,
                    hessian_key,
                    float(err.sae[v].sum()),
                    float(err.sse[v].sum()),
                    float(err.n_entries[v].sum()),
                )
    finally:
        model.train(was_training)
        if hasattr(model, "do_postprocessing"):
            model.do_postprocessing = postprocessing
    result: Dict[str, float] = {"n_structures": n_structures}
    for key in (energy_key, force_key, hessian_key):
        n = stats.get(key + "_n", 0.0)
        if n:
            result[f"{key}_mae"] = stats[key + "_sae"] / n
            result[f"{key}_rmse"] = (stats[key + "_sse"] / n) ** 0.5
    return result
