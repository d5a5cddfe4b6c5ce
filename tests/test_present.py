"""Structures with any subset of energy, forces and Hessian: each loss term and metric
over the present targets only, and energy statistics over the structures that have one.
"""

import numpy as np
import pytest
import torch

import schnetpack as spk
import schnetpack.properties as structure
from torchmetrics.regression import MeanAbsoluteError

from schnetpack_hessian import Hessian, HessianOutput, HessianTask, properties as P
from schnetpack_hessian.data.stats import present_stats
from schnetpack_hessian.layout import square_to_blocks
from schnetpack_hessian.present import (
    PresentL1Loss,
    PresentMeanAbsoluteError,
    PresentMSELoss,
)
from schnetpack_hessian.testing import build_batch, make_potential


def test_on_complete_data_they_are_the_classes_they_extend():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    torch.testing.assert_close(
        PresentMSELoss()(pred, target), torch.nn.MSELoss()(pred, target)
    )
    torch.testing.assert_close(
        PresentL1Loss()(pred, target), torch.nn.L1Loss()(pred, target)
    )
    ours, theirs = PresentMeanAbsoluteError(), MeanAbsoluteError()
    ours.update(pred, target), theirs.update(pred, target)
    torch.testing.assert_close(ours.compute(), theirs.compute())
    assert isinstance(PresentMSELoss(), torch.nn.MSELoss)


def test_missing_targets_are_left_out_of_value_gradient_and_count():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    target = torch.tensor([1.5, float("nan"), 2.0, float("nan")])
    loss = PresentMSELoss()(pred, target)
    assert loss.item() == pytest.approx((0.25 + 1.0) / 2)
    loss.backward()
    assert torch.equal(pred.grad, torch.tensor([-0.5, 0.0, 1.0, 0.0]))
    assert PresentL1Loss()(pred, target).item() == pytest.approx((0.5 + 1.0) / 2)
    mae = PresentMeanAbsoluteError()
    mae.update(pred.detach(), target)
    mae.update(torch.zeros(2), torch.full((2,), float("nan")))  # nothing present
    assert mae.compute().item() == pytest.approx(0.75)
    assert PresentMSELoss()(pred, torch.full((4,), float("nan"))).item() == 0.0


def test_each_loss_term_is_the_hand_computation_on_present_targets(molecules):
    """A batch of four real molecules: E only, F only, H only, and all three."""
    batch = build_batch(molecules, dtype=torch.float64)
    n_atoms = batch[structure.n_atoms].tolist()
    model = make_potential("painn", [Hessian(mode="full")])
    outputs = [
        spk.task.ModelOutput("energy", PresentMSELoss(), 1.0, metrics={}),
        spk.task.ModelOutput("forces", PresentMSELoss(), 0.3, metrics={}),
        HessianOutput(loss_weight=0.09, loss="mse"),
    ]
    task = HessianTask(model=model, outputs=outputs, optimizer_args={"lr": 1e-3})
    pred = task.model(dict(batch))
    g = torch.Generator().manual_seed(1)
    energy = pred["energy"].detach() + torch.randn(4, generator=g, dtype=torch.float64)
    forces = pred["forces"].detach() + torch.randn(
        pred["forces"].shape, generator=g, dtype=torch.float64
    )
    squares = []
    for n in n_atoms:
        h = torch.randn(3 * n, 3 * n, generator=g, dtype=torch.float64)
        squares.append(h + h.T)
    has = {"energy": [1, 0, 0, 1], "forces": [0, 1, 0, 1], "hessian": [0, 0, 1, 1]}
    first_atom = np.cumsum([0] + n_atoms)
    energy[[m for m in range(4) if not has["energy"][m]]] = float("nan")
    for m in range(4):
        if not has["forces"][m]:
            forces[first_atom[m] : first_atom[m + 1]] = float("nan")
        if not has["hessian"][m]:
            squares[m] = torch.full_like(squares[m], float("nan"))
    target = dict(batch, energy=energy, forces=forces)
    target[P.hessian] = torch.cat([square_to_blocks(h) for h in squares])

    task.loss_fn(pred, target)
    terms = {k: float(v) for k, v in task._loss_terms.items()}

    e_err = [(pred["energy"][m] - energy[m]) ** 2 for m in range(4) if has["energy"][m]]
    f_err = torch.cat(
        [
            (pred["forces"] - forces)[first_atom[m] : first_atom[m + 1]].reshape(-1)
            for m in range(4)
            if has["forces"][m]
        ]
    )
    blocks = pred[P.hessian].detach()
    start, h_err = 0, []
    for m, n in enumerate(n_atoms):
        predicted = blocks[start : start + n * n]
        start += n * n
        if has["hessian"][m]:
            reference = square_to_blocks(squares[m])
            h_err.append(((predicted - reference) ** 2).mean())
    assert terms["energy"] == pytest.approx(float(torch.stack(e_err).mean()), rel=1e-10)
    assert terms["forces"] == pytest.approx(0.3 * float((f_err**2).mean()), rel=1e-10)
    assert terms[P.hessian] == pytest.approx(
        0.09 * float(torch.stack(h_err).mean()), rel=1e-10
    )


def test_energy_statistics_leave_missing_energies_out():
    batches = [
        {
            "energy": torch.tensor([-10.0, float("nan")]),
            structure.n_atoms: torch.tensor([2, 3]),
            structure.Z: torch.tensor([1, 1, 8, 8, 8]),
            structure.idx_m: torch.tensor([0, 0, 1, 1, 1]),
        },
        {
            "energy": torch.tensor([-31.0]),
            structure.n_atoms: torch.tensor([3]),
            structure.Z: torch.tensor([1, 8, 8]),
            structure.idx_m: torch.tensor([0, 0, 0]),
        },
    ]
    atomref = {"energy": torch.zeros(10).index_fill(0, torch.tensor([1]), -1.0)}
    mean, std = present_stats(batches, "energy", True, atomref)
    per_atom = np.array([(-10.0 + 2.0) / 2, (-31.0 + 1.0) / 3])
    assert mean.item() == pytest.approx(per_atom.mean())
    assert std.item() == pytest.approx(per_atom.std())
    mean, _ = present_stats(batches[:1][:0], "energy", False)
    assert torch.isnan(mean)
