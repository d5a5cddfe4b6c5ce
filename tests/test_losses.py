"""HessianOutput: normalisation, HVP estimator, masking, gradients, metrics."""

import math

from dataclasses import replace

import pytest
import torch

import schnetpack as spk
import schnetpack.properties as P

from schnetpack_hessian import Hessian, HessianOutput, properties
from schnetpack_hessian.hessian import PassPlan, hessian_rows, sample_probes
from schnetpack_hessian.layout import blocks_to_square
from schnetpack_hessian.losses import HessianMAE, HessianRMSE, hessian_errors
from schnetpack_hessian.testing import (
    clone_batch,
    device_params,
    energy_and_gradient,
    make_potential,
    on_device,
)


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
    model = make_potential(
        "schnet", [Hessian(mode="hvp", probes=dict(kind=probe, n=1))]
    )
    full_model = make_potential("schnet", [Hessian(mode="full")])
    target, _ = perturbed_target(full_model, batch)
    exact = HessianOutput().calculate_loss(
        full_model.eval()(clone_batch(batch)), {properties.hessian: target}
    )
    hessian = model.output_modules[1]
    hessian.probes = replace(hessian.probes, n=n_probes, seed=11)
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
    model = make_potential("painn", [Hessian(mode="hvp", probes=dict(n=3))])
    _, exact = perturbed_target(make_potential("painn", [Hessian(mode="full")]), batch)
    pred = model.train()(clone_batch(batch))
    value = HessianOutput().calculate_loss(pred, {properties.hessian: exact})
    assert value < 1e-20


@pytest.mark.parametrize("mode", ["full", "hvp"])
def test_training_steps_lower_the_hessian_loss(mode, batch):
    """Adam on the Hessian loss of another model's Hessians: the exact loss halves."""
    model = make_potential("painn", [Hessian(mode=mode, probes=dict(kind="rows", n=4))])
    target, _ = perturbed_target(
        make_potential("painn", [Hessian(mode="full")], seed=5), batch, scale=0.0
    )
    reference = {properties.hessian: target}
    exact_loss = HessianOutput()

    def evaluation_loss():
        return float(
            exact_loss.calculate_loss(model.eval()(clone_batch(batch)), reference)
        )

    before = evaluation_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss = HessianOutput().calculate_loss(
            model.train()(clone_batch(batch)), reference
        )
        loss.backward()
        optimizer.step()
    assert evaluation_loss() < 0.5 * before


@pytest.mark.parametrize("mode", ["full", "hvp"])
@pytest.mark.parametrize("rep", ["schnet", "painn"])
def test_loss_gradients_reach_the_parameters(mode, rep, batch):
    model = make_potential(rep, [Hessian(mode=mode, probes=dict(kind="rows", n=2))])
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
        "painn", [Hessian(mode=mode, probes=dict(kind="rows", n=3, seed=5))]
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
        "painn",
        [Hessian(mode="hvp", schedule={"evaluation": "full"}, probes=dict(n=1))],
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
    model = make_potential(
        "schnet", [Hessian(mode="hvp", probes=dict(kind="gaussian"))]
    )
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


def _exact_hvp_loss(model_rep, batch, probes):
    """HVP loss of ``probes`` (k, ΣN, 3) on a model, and the full loss, same target."""
    full = make_potential(model_rep, [Hessian(mode="full")])
    target, _ = perturbed_target(full, batch)
    inputs, gradient = energy_and_gradient(make_potential(model_rep, []).eval(), batch)
    hvp = hessian_rows(gradient, inputs[P.R], probes, PassPlan(create_graph=False))
    pred = {
        properties.hessian_hvp: hvp,
        properties.hessian_probes: probes,
        P.n_atoms: batch[P.n_atoms],
    }
    hvp_loss = HessianOutput().calculate_loss(pred, {properties.hessian: target})
    full_loss = HessianOutput().calculate_loss(
        full.eval()(clone_batch(batch)), {properties.hessian: target}
    )
    return hvp_loss, full_loss


def test_row_probes_covering_every_row_give_the_exact_loss(batch):
    """k a multiple of every molecule's 3N: each row is probed equally often, so the
    HVP estimate with its 1/(3N) scaling is the exact full MSE, not only on average."""
    n_rows = (3 * batch[P.n_atoms]).tolist()  # 9, 15, 24, 9
    k = math.lcm(*n_rows)
    probes = sample_probes("rows", k, batch[P.n_atoms], torch.float64)
    hvp_loss, full_loss = _exact_hvp_loss("schnet", batch, probes)
    torch.testing.assert_close(hvp_loss, full_loss, rtol=1e-12, atol=0)


def test_hadamard_balanced_rademacher_probes_give_the_exact_loss(batch):
    """Rademacher probes from the rows of a Hadamard matrix have Σ v vᵀ = k I exactly,
    so the isotropic 1/(9N²) scaling reproduces the full MSE exactly."""
    n_atoms = batch[P.n_atoms]
    k = 32  # ≥ 3·max(N) = 24
    hadamard = torch.ones(1, 1, dtype=torch.float64)
    while hadamard.shape[0] < k:
        hadamard = torch.cat(
            [torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)]
        )
    probes = torch.cat(
        [hadamard[:, : 3 * n].reshape(k, n, 3) for n in n_atoms.tolist()], dim=1
    )
    hvp_loss, full_loss = _exact_hvp_loss("painn", batch, probes)
    torch.testing.assert_close(hvp_loss, full_loss, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rep", ["schnet", "painn"])
def test_loss_gradients_equal_those_through_schnetpack_response(rep, batch):
    """The parameter gradients of the Hessian loss are those SchNetPack's own
    ``Response`` Hessian gives (same weights, same target)."""
    target, _ = perturbed_target(make_potential(rep, [Hessian(mode="full")]), batch)
    grads = []
    for module in (
        Hessian(mode="full"),
        spk.atomistic.Response("energy", [P.forces, properties.hessian]),
    ):
        model = make_potential(rep, [module]).train()
        pred = model(clone_batch(batch))
        pred.setdefault(P.n_atoms, batch[P.n_atoms])
        HessianOutput().calculate_loss(pred, {properties.hessian: target}).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert any(g is not None and g.abs().sum() > 0 for g in grads[0].values())
    for name, g in grads[0].items():
        if g is None:
            assert grads[1][name] is None or not grads[1][name].any()
        else:
            torch.testing.assert_close(g, grads[1][name], rtol=1e-9, atol=1e-13)


def test_hvp_masking_keeps_every_other_molecules_error(batch):
    """With fixed probes, a molecule without Hessian leaves the per-molecule errors of
    the others unchanged and drops out of the mean."""
    model = make_potential(
        "painn", [Hessian(mode="hvp", probes=dict(kind="gaussian", n=3, seed=5))]
    )
    target, _ = perturbed_target(make_potential("painn", [Hessian(mode="full")]), batch)
    pred = model.train()(clone_batch(batch))
    first = int(batch[P.n_atoms][0]) ** 2
    masked = target.clone()
    masked[:first] = float("nan")
    complete = hessian_errors(pred, target)
    partial = hessian_errors(pred, masked)
    assert partial.valid.tolist() == [False, True, True, True]
    torch.testing.assert_close(partial.sse[1:], complete.sse[1:], rtol=1e-12, atol=0)
    loss = HessianOutput().calculate_loss(pred, {properties.hessian: masked})
    expected = (partial.sse[1:] / partial.n_entries[1:]).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("weight", [math.nan, math.inf, -0.5, "1", None])
def test_loss_weight_must_be_a_finite_non_negative_number(weight):
    with pytest.raises(
        ValueError,
        match=rf"HessianOutput: loss_weight must be a finite number >= 0, got "
        rf"{weight!r}",
    ):
        HessianOutput(loss_weight=weight)


@pytest.mark.parametrize("device", device_params(meta=True))
def test_losses_on_every_device(device, batch):
    """Full and HVP losses (each scheme and loss) are computed on the predictions'
    device from the host sizes: a scalar there (shape only on ``meta``), equal to
    the CPU value elsewhere."""
    model = make_potential("painn", [Hessian(mode="full")])
    target, _ = perturbed_target(model, batch)
    cases = {"full": (model.eval(), ["mse", "mae", "rmse"])}
    for probe in ("gaussian", "rows"):
        hvp = make_potential(
            "painn", [Hessian(mode="hvp", probes=dict(kind=probe, n=2))]
        )
        cases[probe] = (hvp.train(), ["mse"] + (["mae"] if probe == "rows" else []))
    for scheme, (module, losses) in cases.items():
        pred = {k: v.detach() for k, v in module(clone_batch(batch)).items()}
        moved = on_device(pred, device)
        targets = {properties.hessian: target.to(device)}
        for loss in losses:
            output = HessianOutput(
                loss=loss, probe=None if scheme == "full" else scheme
            )
            value = output.calculate_loss(moved, targets)
            assert value.shape == () and value.device.type == device, (scheme, loss)
            if device != "meta":
                expected = output.calculate_loss(pred, {properties.hessian: target})
                torch.testing.assert_close(value.cpu(), expected, rtol=1e-12, atol=0)
