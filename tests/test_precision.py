"""Reduced precision (TF32, autocast) and Hessians: detected, refused in training,
and the invariance check's tolerance follows the arithmetic in use."""

import warnings

import pytest
import torch

import schnetpack as spk
import schnetpack_hessian.hessian as hessian_module
from schnetpack_hessian import Hessian, HessianOutput, HessianTask
from schnetpack_hessian.precision import (
    ReducedPrecisionError,
    effective_eps,
    guard_precision,
    reduced_precision,
)
from schnetpack_hessian.testing import build_batch, make_potential, quiet_trainer


@pytest.fixture()
def matmul_high():
    """``torch.set_float32_matmul_precision("high")`` (what ``matmul_precision``
    sets), restored afterwards."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision(before)


def test_full_precision_is_not_reduced():
    assert torch.get_float32_matmul_precision() == "highest"
    for dtype in (torch.float32, torch.float64):
        assert reduced_precision("cpu", dtype) is None
        assert effective_eps("cpu", dtype) == torch.finfo(dtype).eps
    assert reduced_precision("cpu", torch.float32, trainer_precision="32-true") is None


def test_tf32_reduces_float32_only(matmul_high):
    assert "set_float32_matmul_precision('high')" in reduced_precision(
        "cpu", torch.float32
    )
    assert effective_eps("cpu", torch.float32) == 2.0**-10
    assert reduced_precision("cpu", torch.float64) is None
    assert effective_eps("cpu", torch.float64) == torch.finfo(torch.float64).eps


def test_autocast_and_mixed_trainer_precision_are_reduced():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "autocast to torch.bfloat16" in reduced_precision("cpu", torch.float64)
        assert effective_eps("cpu", torch.float32) == 2.0**-7
    assert "'bf16-mixed'" in reduced_precision(
        "cpu", torch.float64, trainer_precision="bf16-mixed"
    )


def test_guard_refuses_warns_or_stays_silent(matmul_high):
    with pytest.raises(ReducedPrecisionError, match="opt in with X=1"):
        guard_precision("Here", "cpu", torch.float32, allow=False, opt_in="X=1")
    with pytest.warns(UserWarning, match="Here: torch.set_float32_matmul_precision"):
        guard_precision("Here", "cpu", torch.float32, allow=True, opt_in="X=1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard_precision("Here", "cpu", torch.float64, allow=False, opt_in="X=1")


def _hessian_task(**kwargs):
    model = make_potential("schnet", [Hessian(mode="hvp", probes=dict(n=1))])
    outputs = [
        spk.task.ModelOutput("energy", loss_fn=torch.nn.MSELoss(), metrics={}),
        HessianOutput(loss_weight=0.1),
    ]
    return HessianTask(
        model=model, outputs=outputs, optimizer_args={"lr": 1e-3}, **kwargs
    )


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_hessian_training_refuses_a_mixed_precision_trainer(molecules, precision):
    pl = pytest.importorskip("pytorch_lightning")
    batch = build_batch(molecules, dtype=torch.float64)

    class OneBatch(pl.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader([dict(batch)], batch_size=None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 16-mixed on CPU: Lightning says bf16
        trainer = quiet_trainer(
            accelerator="cpu",
            precision=precision,
            max_epochs=1,
        )
    with pytest.raises(ReducedPrecisionError, match="task.allow_reduced_precision"):
        trainer.fit(_hessian_task(), datamodule=OneBatch())


def test_opting_in_turns_the_refusal_into_a_warning(matmul_high):
    task = _hessian_task(allow_reduced_precision=True).float()
    with pytest.warns(UserWarning, match="HessianTask: torch.set_float32"):
        task._check_precision()
    with pytest.raises(ReducedPrecisionError):
        _hessian_task().float()._check_precision()
    _hessian_task()._check_precision()  # float64: TF32 does not apply


@pytest.mark.parametrize("representation", ["schnet", "painn"])
def test_invariance_check_holds_under_bfloat16_autocast(molecules, representation):
    """Under autocast the rigid-motion relations hold only to bfloat16's roundoff
    (far above float32's); the one-time check's tolerance follows the arithmetic in
    use, so an invariant model keeps its 3N − 6 passes."""
    batch = build_batch(molecules, dtype=torch.float32)
    errors = {}
    measure = hessian_module.invariance_error

    def record(*args, **kwargs):
        errors[torch.is_autocast_enabled("cpu")] = measure(*args, **kwargs)
        return errors[torch.is_autocast_enabled("cpu")]

    for autocast in (False, True):
        model = make_potential(
            representation, [Hessian(mode="full")], dtype=torch.float32
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(hessian_module, "invariance_error", record)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    model(dict(batch))
        assert model.output_modules[-1]._invariance_holds == {"rigid": True}
    assert errors[True] > 100 * errors[False]  # the reduced arithmetic shows
    assert errors[True] < 10 * (2.0**-7) ** 0.5
