"""Reduced-precision arithmetic and second derivatives.

A Hessian is a derivative of a derivative: its rows come from a backward pass through
the backward pass of the forces, and every matrix product on the way loses what the
arithmetic drops.  TF32 (``torch.set_float32_matmul_precision("high")``, which
Lightning's and spktrain's ``matmul_precision`` set, or
``torch.backends.cuda.matmul.allow_tf32``) keeps 10 mantissa bits instead of 23, and
autocast (Lightning's ``precision="16-mixed"``/``"bf16-mixed"``) runs products in
float16/bfloat16; both are fine for energies and forces of a potential and degrade its
Hessians by orders of magnitude.  Hessian training refuses them unless the user opts in
(:class:`~schnetpack_hessian.task.HessianTask` ``allow_reduced_precision``), the ASE
calculator warns, and :func:`effective_eps` gives the unit roundoff actually in use, so
tolerances (the Hessian module's one-time invariance check) hold under it.  Evaluation
(``spkhess-eval``, the study) runs in float64, which neither setting touches.
"""

import warnings
from typing import Optional, Union

import torch

__all__ = [
    "ReducedPrecisionError",
    "effective_eps",
    "guard_precision",
    "reduced_precision",
]

#: unit roundoff of TF32 (10 explicit mantissa bits), of float16 and of bfloat16
_TF32_EPS = 2.0**-10
_AUTOCAST_EPS = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


class ReducedPrecisionError(RuntimeError):
    """Hessian work was asked to run under TF32 or autocast without opting in."""


def _device_type(device: Union[str, torch.device]) -> str:
    return torch.device(device).type


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype in effect for ``device_type``; None when autocast is off."""
    try:  # torch >= 2.4 takes the device type
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # pragma: no cover - older torch
        enabled = (
            torch.is_autocast_cpu_enabled()
            if device_type == "cpu"
            else torch.is_autocast_enabled()
        )
    if not enabled:
        return None
    try:
        return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):  # pragma: no cover - older torch
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype()
        return torch.get_autocast_gpu_dtype()


def _tf32(device_type: str) -> Optional[str]:
    """What lets float32 matrix products on ``device_type`` use TF32; None if nothing."""
    precision = torch.get_float32_matmul_precision()
    if precision != "highest":
        return f"torch.set_float32_matmul_precision({precision!r}) (matmul_precision)"
    if device_type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "torch.backends.cuda.matmul.allow_tf32 = True"
    return None


def reduced_precision(
    device: Union[str, torch.device],
    dtype: torch.dtype,
    trainer_precision: Optional[str] = None,
) -> Optional[str]:
    """What reduces the precision of ``dtype`` arithmetic on ``device``, as a phrase;
    None when it runs at full precision.

    Args:
        device: where the model runs.
        dtype: the model's parameter dtype (float64 is never reduced by TF32).
        trainer_precision: Lightning's ``Trainer.precision`` (e.g. ``"16-mixed"``),
            whose autocast is not yet active outside the training step.
    """
    device_type = _device_type(device)
    autocast = _autocast_dtype(device_type)
    if autocast is not None:
        return f"autocast to {autocast} is enabled on {device_type}"
    if trainer_precision is not None and str(trainer_precision) not in (
        "32-true",
        "64-true",
        "32",
        "64",
    ):
        return f"the trainer's precision is {trainer_precision!r}"
    if dtype == torch.float32:
        tf32 = _tf32(device_type)
        if tf32 is not None:
            return f"{tf32} lets float32 matrix products use TF32"
    return None


def effective_eps(device: Union[str, torch.device], dtype: torch.dtype) -> float:
    """Unit roundoff of the arithmetic in use: ``dtype``'s, or coarser under autocast
    or TF32 (float32 only)."""
    device_type = _device_type(device)
    eps = torch.finfo(dtype).eps
    autocast = _autocast_dtype(device_type)
    if autocast is not None and dtype.is_floating_point:
        eps = max(eps, _AUTOCAST_EPS.get(autocast, torch.finfo(autocast).eps))
    if dtype == torch.float32 and _tf32(device_type) is not None:
        eps = max(eps, _TF32_EPS)
    return eps


def guard_precision(
    where: str,
    device: Union[str, torch.device],
    dtype: torch.dtype,
    allow: bool,
    opt_in: str,
    trainer_precision: Optional[str] = None,
    refuse: bool = True,
) -> None:
    """Refuse (or warn about) Hessian work under reduced precision.

    Args:
        where: who asks, first words of the message (e.g. ``"HessianTask"``).
        device, dtype, trainer_precision: as :func:`reduced_precision`.
        allow: the user opted in: warn only.
        opt_in: how to opt in, quoted in the message.
        refuse: raise when not allowed (else warn).

    Raises:
        ReducedPrecisionError: reduced precision is in use, ``allow`` is False and
            ``refuse`` is True.
    """
    reason = reduced_precision(device, dtype, trainer_precision)
    if reason is None:
        return
    message = (
        f"{where}: {reason}; Hessians (second derivatives) computed at reduced "
        "precision are wrong by orders of magnitude more than energies and forces. "
        "Use full float32/float64 (torch.set_float32_matmul_precision('highest'), "
        "no matmul_precision, trainer.precision=32)"
    )
    if allow or not refuse:
        warnings.warn(
            message + ("" if allow else f", or opt in with {opt_in}"), stacklevel=3
        )
        return
    raise ReducedPrecisionError(message + f", or opt in with {opt_in}")
