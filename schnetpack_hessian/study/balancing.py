"""Loss terms balanced by the data: weight ``1 / Var(target)`` over the training split.

With every term divided by the variance of its target, a model that predicts each
target's mean starts with every term at about 1, whatever the units and the typical
magnitudes of energies, forces and Hessians.  :func:`target_variances` measures the
variances; :class:`VarianceBalancing` sets the weights when training starts (spktrain:
``loss=variance``).
"""

import logging
from typing import Dict, Sequence

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer

__all__ = ["target_variances", "VarianceBalancing"]

log = logging.getLogger(__name__)


def target_variances(dataset, keys: Sequence[str]) -> Dict[str, float]:
    """Population variance of each target over all its values in ``dataset``.

    Items are read as training reads them (the dataset's transforms applied, e.g.
    energies after ``RemoveOffsets``).  Energies count one value per structure, forces
    one per component, Hessians one per entry of the structures that have one (NaN
    blocks, the data layer's "no Hessian", are skipped).

    Args:
        dataset: a SchNetPack dataset (e.g. a data module's ``train_dataset``).
        keys: target properties, e.g. ``["energy", "forces", "hessian"]``.

    Returns:
        ``{key: variance}`` in the squared unit of each target.

    Raises:
        ValueError: a target without finite values or with zero variance.
    """
    count = {k: 0 for k in keys}
    total = {k: 0.0 for k in keys}
    total_sq = {k: 0.0 for k in keys}
    for i in range(len(dataset)):
        item = dataset[i]
        for k in keys:
            values = item[k].detach().to(torch.float64).reshape(-1)
            values = values[torch.isfinite(values)]
            count[k] += values.numel()
            total[k] += float(values.sum())
            total_sq[k] += float((values * values).sum())
    out = {}
    for k in keys:
        if count[k] == 0:
            raise ValueError(f"target_variances: no finite {k!r} values in the data")
        mean = total[k] / count[k]
        var = max(total_sq[k] / count[k] - mean * mean, 0.0)
        if not np.isfinite(var) or var <= 0.0:
            raise ValueError(
                f"target_variances: {k!r} has variance {var} over {count[k]} values; "
                "a constant target cannot be balanced by its variance"
            )
        out[k] = var
    return out


class VarianceBalancing(Callback):
    """Set each non-zero loss weight of the task to ``1 / Var(target)`` at fit start.

    Terms with weight 0 stay off, so the E / E+F / E+H baselines keep their targets.
    The variances come from the data module's training split (:func:`target_variances`).

    Attributes:
        weights: ``{output name: weight}`` as set (after ``on_fit_start``).
    """

    def __init__(self):
        super().__init__()
        self.weights: Dict[str, float] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        outputs = [o for o in pl_module.outputs if o.loss_weight != 0]
        dataset = trainer.datamodule.train_dataset
        variances = target_variances(dataset, [o.target_property for o in outputs])
        for output in outputs:
            output.loss_weight = 1.0 / variances[output.target_property]
            self.weights[output.name] = output.loss_weight
            log.info(
                "VarianceBalancing: %s weight 1/Var = %.4g",
                output.name,
                output.loss_weight,
            )
