"""Teacher models: exact products and Hessians of a frozen model as a student's
labels, the product-label loss, and HessianTask's on-the-fly distillation."""

import pytest
import torch

import schnetpack as spk
import schnetpack.properties as structure

from schnetpack_hessian import Hessian, HessianOutput, HessianTask, Teacher, properties
from schnetpack_hessian.data import write
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian.hessian import sample_probes
from schnetpack_hessian.layout import split_squares
from schnetpack_hessian.losses import hvp_label_errors
from schnetpack_hessian.testing import (
    build_batch,
    clone_batch,
    finite_difference_hessian,
    make_potential,
    reference_molecules,
    logged_validation,
    train_tiny,
)


def _square_products(blocks, n_atoms, probes):
    """H v per molecule from block-layout Hessians ``(ΣN², 3, 3)``, ``(k, ΣN, 3)``."""
    out, start = [], 0
    for square, n in zip(split_squares(blocks, n_atoms), n_atoms.tolist()):
        v = probes[:, start : start + n].reshape(probes.shape[0], 3 * n)
        out.append((v @ square.T).reshape(probes.shape[0], n, 3))
        start += n
    return torch.cat(out, dim=1)


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


class PairSprings(torch.nn.Module):
    """A plain torch module mapping a SchNetPack batch to energies ``(B,)``: springs
    of rest length 1.2 Å between all atom pairs of a molecule (not SchNetPack)."""

    def forward(self, inputs):
        r = inputs[structure.R]
        idx_m = inputs[structure.idx_m]
        d = (r[:, None] - r[None, :]).pow(2).sum(-1).add(1e-12).sqrt()
        same = idx_m[:, None] == idx_m[None, :]
        pair = torch.triu(same, diagonal=1)
        e_pair = torch.where(pair, (d - 1.2) ** 2, torch.zeros_like(d))
        energy = torch.zeros(len(inputs[structure.n_atoms]), dtype=r.dtype)
        return energy.index_add(0, idx_m, e_pair.sum(1)) * self.scale

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(3.0, dtype=torch.float64))


@pytest.mark.parametrize("representation", ["schnet", "painn"])
def test_teacher_products_are_its_exact_hessian_times_the_probes(representation):
    """float64, mixed sizes: the teacher's products equal its finite-difference
    Hessian times the probes, and its full Hessian is that Hessian."""
    molecules = reference_molecules()
    model = make_potential(representation, [spk.atomistic.Forces()])
    teacher = Teacher(model)
    batch = build_batch(molecules)
    n_atoms = batch[structure.n_atoms]
    reference = finite_difference_hessian(model, batch, step=1e-4)
    probes = sample_probes(
        "gaussian", 3, n_atoms, torch.float64, torch.Generator().manual_seed(0)
    )
    products = teacher.hvp(clone_batch(batch), probes)
    exact = teacher.hessian(clone_batch(batch))
    assert _relative(exact, reference) < 1e-6
    torch.testing.assert_close(
        products, _square_products(exact, n_atoms, probes), rtol=0, atol=1e-12
    )
    assert _relative(products, _square_products(reference, n_atoms, probes)) < 1e-6
    assert not any(p.requires_grad for p in teacher.parameters())  # frozen


def test_teacher_runs_the_energy_only_and_converts_its_unit():
    """A model with a Hessian module (what spktrain trains) is a teacher: its
    derivative modules are skipped; energy_scale converts its Hessian's unit."""
    model = make_potential("painn", [Hessian(mode="full")])
    batch = build_batch(reference_molecules()[:2])
    with torch.enable_grad():
        inputs = clone_batch(batch)
        inputs[structure.R].requires_grad_()
        exact = model(inputs)[properties.hessian].detach()
    to_kcal = float(spk.units.convert_units("eV", "kcal/mol"))
    teacher = Teacher(model, energy_scale=to_kcal)
    assert torch.allclose(
        teacher.hessian(clone_batch(batch)), to_kcal * exact, atol=1e-7
    )


def test_a_plain_torch_module_is_a_teacher():
    """Any module mapping a batch to energies: its products are its Hessian times
    the probes (finite differences of its own gradient)."""
    springs = PairSprings()
    teacher = Teacher(springs)
    batch = build_batch(reference_molecules()[:3])
    n_atoms = batch[structure.n_atoms]
    probes = sample_probes(
        "rows", 2, n_atoms, torch.float64, torch.Generator().manual_seed(1)
    )

    def gradient(positions):
        inputs = clone_batch(batch)
        inputs[structure.R] = positions.requires_grad_()
        energy = springs(inputs)
        return torch.autograd.grad(energy.sum(), positions)[0]

    r = batch[structure.R].detach()
    h = 1e-5
    expected = torch.stack(
        [(gradient(r + h * v) - gradient(r - h * v)) / (2 * h) for v in probes]
    )
    assert torch.allclose(teacher.hvp(clone_batch(batch), probes), expected, atol=1e-7)


def test_product_label_errors_are_the_hand_computation():
    """HessianOutput(target_form='hvp'): the loss is the mean over molecules with a
    label of ‖ΔHv‖² / 9N² (isotropic probes), molecules with NaN labels left out."""
    batch = build_batch(reference_molecules()[:3])
    n_atoms = batch[structure.n_atoms]
    n_total = int(n_atoms.sum())
    gen = torch.Generator().manual_seed(2)
    probes = torch.randn((2, n_total, 3), generator=gen, dtype=torch.float64)
    hvp = torch.randn((2, n_total, 3), generator=gen, dtype=torch.float64)
    labels = torch.randn((n_total, 2, 3), generator=gen, dtype=torch.float64)
    labels[n_atoms[0] : n_atoms[0] + n_atoms[1]] = float("nan")  # molecule 1: none
    pred = {structure.n_atoms: n_atoms, properties.hessian_hvp: hvp}
    pred[properties.hessian_probes] = probes
    output = HessianOutput(target_form="hvp", probe="gaussian")
    assert output.target_property == properties.hessian_label_hvp
    loss = output.calculate_loss(pred, {properties.hessian_label_hvp: labels})

    starts = [0, int(n_atoms[0]), int(n_atoms[0] + n_atoms[1])]
    per_molecule = []
    for m in (0, 2):
        lo, n = starts[m], int(n_atoms[m])
        diff = hvp[:, lo : lo + n] - labels[lo : lo + n].transpose(0, 1)
        per_molecule.append(diff.pow(2).sum() / 2 / (9 * n * n))
    assert loss.item() == pytest.approx(sum(per_molecule).item() / 2, rel=1e-12)
    errors = hvp_label_errors(pred, labels, probe="gaussian")
    assert errors.valid.tolist() == [True, False, True]


def _student(representation="painn", seed=0):
    return make_potential(
        representation,
        [Hessian(mode="hvp", probes=dict(n=2, seed=seed))],
        n_atom_basis=8,
        n_interactions=1,
        seed=seed + 3,
    )


def _task(student, teacher):
    return HessianTask(
        model=student,
        outputs=[
            spk.task.ModelOutput(
                structure.energy, loss_fn=torch.nn.MSELoss(), metrics={}
            ),
            HessianOutput(target_form="hvp", loss_weight=1.0),
        ],
        optimizer_cls=torch.optim.Adam,
        optimizer_args={"lr": 1e-3},
        teacher=teacher,
    )


@pytest.mark.parametrize("representation", ["schnet", "painn"])
def test_task_labels_the_students_probes_with_the_teachers_products(representation):
    """On-the-fly distillation: the batch gets the student's own probes and the
    teacher's exact products along them (no stored Hessian), and the student's
    products are taken along those probes."""
    teacher_model = make_potential("painn", [spk.atomistic.Forces()], seed=5)
    task = _task(_student(representation), Teacher(teacher_model))
    batch = build_batch(reference_molecules())
    batch[structure.energy] = torch.zeros(4, dtype=torch.float64)
    labelled = task.with_teacher_labels(clone_batch(batch))
    probes = labelled[properties.hessian_label_probes].transpose(0, 1)
    assert probes.shape == (2, int(batch[structure.n_atoms].sum()), 3)
    exact = task.teacher.hessian(clone_batch(batch))  # = finite differences (above)
    expected = _square_products(exact, batch[structure.n_atoms], probes)
    labels = labelled[properties.hessian_label_hvp].transpose(0, 1)
    torch.testing.assert_close(labels, expected, rtol=0, atol=1e-12)
    task.train()
    with torch.enable_grad():
        inputs = clone_batch(labelled)
        pred = task.model(inputs)
    assert torch.equal(pred[properties.hessian_probes], probes)
    loss = task.loss_fn(pred, labelled)
    loss.backward()
    grads = [p.grad for p in task.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in task.teacher.parameters())
    # the student's checkpoint holds the student only
    assert "teacher" not in task.hparams
    assert not any(k.startswith("teacher") for k in task.state_dict())


def test_a_teacher_needs_a_product_output_and_an_hvp_student():
    teacher = Teacher(make_potential("schnet", [spk.atomistic.Forces()]))
    full_student = make_potential("schnet", [Hessian(mode="full")])
    with pytest.raises(ValueError, match="target_form='hvp'"):
        _task(full_student, teacher)


@pytest.mark.integration
def test_spktrain_distills_a_pretrained_teacher_into_data_without_hessians(tmp_path):
    """``+distill=teacher``: a student trains on energies and forces only (the file
    has no Hessian), with the shipped E+F+H model's products as Hessian labels;
    validation reports its Hessian error against the teacher."""
    data = tmp_path / "ef_only.h5"
    write(data, make_atoms(n_structures=24, seed=4, missing_every=1, sizes=(3, 4)))
    run = train_tiny(
        [
            "experiment=reactive_efh",
            "+distill=teacher",
            "globals.teacher=pretrained:chon-xtb-efh",
            f"data.datapath={data}",
        ],
        cwd=tmp_path / "train",
    )
    values = logged_validation(run, "val_hessian_RMSE")
    assert len(values) == 2 and all(0 < v < float("inf") for v in values)
    model = torch.load(run / "best_model", weights_only=False)
    module = next(m for m in model.modules() if isinstance(m, Hessian))
    assert module.mode == "hvp" and module.schedule.training == "hvp"


def test_validation_labels_use_the_same_probes_every_epoch():
    """Validation and test draw the teacher's probes from a generator seeded by the
    batch index: every epoch's validation loss is measured along the same probes
    (early stopping compares like with like), while training probes change."""
    task = _task(
        _student(), Teacher(make_potential("schnet", [spk.atomistic.Forces()]))
    )
    batch = build_batch(reference_molecules())

    def probes(**kwargs):
        labelled = task.with_teacher_labels(clone_batch(batch), **kwargs)
        return labelled[properties.hessian_label_probes]

    assert torch.equal(probes(fixed_probes=3), probes(fixed_probes=3))
    assert not torch.equal(probes(fixed_probes=3), probes(fixed_probes=4))
    assert not torch.equal(probes(), probes())
