"""Losses and metrics over the targets a structure has.

A structure may lack its energy, forces or Hessian (``docs/DATA.md``: a missing target
is stored as NaN).  :class:`PresentMSELoss` and :class:`PresentL1Loss` are
``torch.nn.MSELoss`` / ``L1Loss`` over the present entries only (NaN targets left out,
the mean taken over what is left), and :class:`PresentMeanAbsoluteError` is
torchmetrics' MAE counted over present targets.  On complete data they equal the
classes they extend.  No host synchronisation: masks are applied with ``torch.where``
and the count stays a tensor.  (The Hessian term masks missing Hessians itself,
:class:`~schnetpack_hessian.losses.HessianOutput`.)
"""

import torch
from torchmetrics.regression import MeanAbsoluteError

__all__ = ["PresentMSELoss", "PresentL1Loss", "PresentMeanAbsoluteError"]


def _present_errors(pred: torch.Tensor, target: torch.Tensor):
    """``(pred − target with missing entries set to 0, present mask)``."""
    present = ~torch.isnan(target)
    diff = torch.where(present, pred - torch.nan_to_num(target), 0.0)
    return diff, present


class PresentMSELoss(torch.nn.MSELoss):
    """Mean squared error over the entries whose target is present (not NaN); 0 for a
    batch without any."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff, present = _present_errors(pred, target)
        return (diff**2).sum() / present.sum().clamp_min(1)


class PresentL1Loss(torch.nn.L1Loss):
    """Mean absolute error over the entries whose target is present (not NaN); 0 for a
    batch without any."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff, present = _present_errors(pred, target)
        return diff.abs().sum() / present.sum().clamp_min(1)


class PresentMeanAbsoluteError(MeanAbsoluteError):
    """torchmetrics' mean absolute error over the present (not NaN) targets."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        diff, present = _present_errors(preds, target)
        self.sum_abs_error += diff.abs().sum()
        self.total += present.sum()
