"""HessianOutput: normalisation, HVP estimator, masking, gradients, metrics."""

import pytest
import torch

import schnetpack.properties as P

from schnetpack_hessian import Hessian, HessianOutput, properties
from schnetpack_hessian.layout import blocks_to_square
from schnetpack_hessian.losses import HessianMAE, HessianRMSE
from schnetpack_hessian.testing import clone_batch, make_potential


def perturbed_target(model, batch, scale=0.3, seed=1):
    """Exact model Hessians plus symmetric noise: a target with a known residual."""
    exact = model.eval()(clone_batch(batch))[properties.hessian].detach()
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(exact.shape, generator=g, dtype=exact.dtype) * scale
    return exact + 0.5 * (noise + noise.transpose(1, 2)), exact


def manual_losses(pred, target, n_atoms):
    """Per-molecule MSE and MAE over the (3N)² entries, straight from the definition."""
    mse, mae = [], []
    sizes = [n * n for n in n_atoms.tolist()]
    for p, t in zip(torch.split(pred, sizes), torch.split(target, sizes)):
        d = blocks_to_square(p) - blocks_to_square(t)
        mse.append((d**2).mean())
        mae.append(d.abs().mean())
    return torch.stack(mse), torch.stack(mae)


@pytest.mark.parametrize("loss", ["mse", "mae", "rmse"])
def test_full_loss_is_per_molecule_mean_then_mean_over_molecules(loss, batch):
    model = make_potential("painn", [Hessian(mode="full")])
    target, _ = perturbed_target(model, batch)
    pred = model.eval()(clone_batch(batch))
    out = HessianOutput(loss=loss, loss_weight=2.0)
    value = out.calculate_loss(pred, {properties.hessian: target})
    mse, mae = manual_losses(pred[properties.hessian], target, batch[P.n_atoms])
    expected = {"mse": mse.mean(), "mae": mae.mean(), "rmse": mse.mean().sqrt()}[loss]
    torch.testing.assert_close(value, 2.0 * expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher", "rows"])
def test_hvp_loss_is_an_unbiased_estimate_of_the_full_loss(probe, batch):
    """Mean over K probes within 5 standard errors of the exact full MSE loss."""
    n_probes = 1500
    model = make_potential("schnet", [Hessian(mode="hvp", probe=probe, n_probes=1)])
    full_model = make_potential("schnet", [Hessian(mode="full")])
    target, _ = perturbed_target(full_model, batch)
    exact = HessianOutput().calculate_loss(
        full_model.eval()(clone_batch(batch)), {properties.hessian: target}
    )
    hessian = model.output_modules[1]
    hessian.n_probes, hessian.seed = n_probes, 11
    pred = model.eval()(clone_batch(batch))
    per_probe = []
    for k in range(n_probes):
        single = dict(pred)
        single[properties.hessian_hvp] = pred[properties.hessian_hvp][k : k + 1]
        single[properties.hessian_probes] = pred[properties.hessian_probes][k : k + 1]
        per_probe.append(
            HessianOutput().calculate_loss(single, {properties.hessian: target})
        )
    samples = torch.stack(per_probe)
    stderr = samples.std() / n_probes**0.5
    assert abs(samples.mean() - exact) < 5 * stderr, (samples.mean(), exact, stderr)
    # and the k-probe loss is the mean of single-probe losses
    k_loss = HessianOutput().calculate_loss(pred, {properties.hessian: target})
    torch.testing.assert_close(k_loss, samples.mean(), rtol=1e-10, atol=0)


def test_hvp_loss_is_zero_for_a_perfect_model(batch):
    model = make_potential("painn", [Hessian(mode="hvp", n_probes=3)])
    _, exact = perturbed_target(make_potential("painn", [Hessian(mode="full")]), batch)
    pred = model.train()(clone_batch(batch))
    value = HessianOutput().calculate_loss(pred, {properties.hessian: exact})
    assert value < 1e-20


@pytest.mark.parametrize("mode", ["full", "hvp"])
@pytest.mark.parametrize("rep", ["schnet", "painn"])
def test_loss_gradients_reach_the_parameters(mode, rep, batch):
    model = make_potential(rep, [Hessian(mode=mode, probe="rows", n_probes=2)])
    target, _ = perturbed_target(make_potential(rep, [Hessian(mode="full")]), batch)
    pred = model.train()(clone_batch(batch))
    HessianOutput(loss="mae" if mode == "hvp" else "mse").calculate_loss(
        pred, {properties.hessian: target}
    ).backward()
    rep_grads = [
        p.grad for p in model.representation.parameters() if p.grad is not None
    ]
    assert len(rep_grads) > 5
    assert sum(float(g.abs().sum()) for g in rep_grads) > 0


@pytest.mark.parametrize("mode", ["full", "hvp"])
def test_molecule_without_hessian_changes_neither_loss_nor_metric(mode, batch):
    model = make_potential(
        "painn", [Hessian(mode=mode, probe="rows", n_probes=3, seed=5)]
    )
    target, _ = perturbed_target(make_potential("painn", [Hessian(mode="full")]), batch)
    n_atoms = batch[P.n_atoms]
    first = int(n_atoms[0]) ** 2  # H2O has no Hessian in the masked copy
    masked = target.clone()
    masked[:first] = float("nan")
    garbage = target.clone()
    garbage[:first] = 1e6

    def evaluate(tgt, subset_target=None):
        model.output_modules[1]._generator = None  # same probes each time
        pred = model.train()(clone_batch(batch))
        output = HessianOutput(metrics={"MAE": HessianMAE(), "RMSE": HessianRMSE()})
        loss = output.calculate_loss(pred, {properties.hessian: tgt})
        output.update_metrics(pred, {properties.hessian: tgt}, "val")
        return pred, loss, {k: m.compute() for k, m in output.val_metrics.items()}

    pred, loss_masked, metrics_masked = evaluate(masked)
    assert torch.isfinite(loss_masked)
    loss_masked.backward()
    assert all(
        torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None
    )
    # dropping H2O from the batch gives the same loss and metrics
    from schnetpack_hessian.testing import build_batch, reference_molecules

    rest = build_batch(reference_molecules()[1:])
    model.output_modules[1]._generator = None
    _, loss_garbage, _ = evaluate(garbage)
    assert loss_garbage > 10 * loss_masked  # the garbage target does count when present
    sub_target = target[first:]
    pred_rest = model.train()(clone_batch(rest))
    out_rest = HessianOutput()
    if mode == "full":
        loss_rest = out_rest.calculate_loss(pred_rest, {properties.hessian: sub_target})
        torch.testing.assert_close(loss_masked, loss_rest, rtol=1e-12, atol=0)
        out_rest.update_metrics(pred_rest, {properties.hessian: sub_target}, "val")
        for k, m in out_rest.val_metrics.items():
            torch.testing.assert_close(
                metrics_masked[k], m.compute(), rtol=1e-12, atol=0
            )


def test_partially_missing_hessian_masks_the_whole_molecule(batch):
    model = make_potential("schnet", [Hessian(mode="full")])
    target, _ = perturbed_target(model, batch)
    pred = model.eval()(clone_batch(batch))
    one_nan = target.clone()
    one_nan[0, 0, 0] = float("nan")
    all_nan = target.clone()
    all_nan[:9] = float("nan")
    out = HessianOutput()
    a = out.calculate_loss(pred, {properties.hessian: one_nan})
    b = out.calculate_loss(pred, {properties.hessian: all_nan})
    torch.testing.assert_close(a, b)


def test_all_molecules_missing_gives_zero_loss(batch):
    model = make_potential("schnet", [Hessian(mode="full")])
    pred = model.train()(clone_batch(batch))
    target = torch.full_like(pred[properties.hessian], float("nan"))
    loss = HessianOutput().calculate_loss(pred, {properties.hessian: target})
    assert loss == 0


def test_metrics_pool_all_entries_in_full_mode(batch):
    model = make_potential("painn", [Hessian(mode="full")])
    target, _ = perturbed_target(model, batch)
    pred = model.eval()(clone_batch(batch))
    out = HessianOutput()
    out.update_metrics(pred, {properties.hessian: target}, "train")
    diff = pred[properties.hessian] - target
    torch.testing.assert_close(
        out.train_metrics["MAE"].compute(), diff.abs().mean().double()
    )
    torch.testing.assert_close(
        out.train_metrics["RMSE"].compute(), diff.pow(2).mean().sqrt().double()
    )


def test_validation_reports_full_metrics_while_training_uses_hvp(batch):
    model = make_potential(
        "painn", [Hessian(mode="hvp", n_probes=1, schedule={"evaluation": "full"})]
    )
    target, _ = perturbed_target(make_potential("painn", [Hessian(mode="full")]), batch)
    train_pred = model.train()(clone_batch(batch))
    assert train_pred[properties.hessian].shape == (0, 3, 3)  # placeholder only
    val_pred = model.eval()(clone_batch(batch))
    assert properties.hessian in val_pred
    out = HessianOutput()
    out.update_metrics(val_pred, {properties.hessian: target}, "val")
    diff = val_pred[properties.hessian] - target
    torch.testing.assert_close(
        out.val_metrics["MAE"].compute(), diff.abs().mean().double()
    )


def test_mae_with_isotropic_probes_is_refused(batch):
    model = make_potential("schnet", [Hessian(mode="hvp", probe="gaussian")])
    target, _ = perturbed_target(
        make_potential("schnet", [Hessian(mode="full")]), batch
    )
    pred = model.train()(clone_batch(batch))
    with pytest.raises(ValueError, match="probe='rows'"):
        HessianOutput(loss="mae").calculate_loss(pred, {properties.hessian: target})


def test_wrong_target_shape_is_reported(batch):
    model = make_potential("schnet", [Hessian(mode="full")])
    pred = model.eval()(clone_batch(batch))
    n = int(batch[P.n_atoms].sum())
    with pytest.raises(ValueError, match="expected"):
        HessianOutput().calculate_loss(
            pred, {properties.hessian: torch.zeros(3 * n, 3 * n)}
        )
