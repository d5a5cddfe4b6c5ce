"""Rigid-motion invariance: fewer seeded passes, the same Hessian."""

import pickle
import warnings
import zipfile

import pytest
import torch
from ase import Atoms
from ase.build import molecule

import schnetpack as spk
import schnetpack.properties as P

from schnetpack_hessian import Hessian, properties
from schnetpack_hessian.hessian import PassPlan, full_hessian, hessian_rows
from schnetpack_hessian.packing import registered
from schnetpack_hessian.rigid import rigid_basis, rigid_products
from schnetpack_hessian.testing import (
    build_batch,
    clone_batch,
    device_params,
    energy_and_gradient,
    finite_difference_hessian,
    graph_functions,
    hessian_loss_gradients,
    make_potential,
    on_device,
)


class HarmonicWell(torch.nn.Module):
    """Adds k·Σ|r_i|² to each molecule's energy: an external, non-invariant term."""

    def __init__(self, k: float = 0.3):
        super().__init__()
        self.k = k

    def forward(self, inputs):
        r2 = (inputs[P.R] ** 2).sum(-1)
        well = torch.zeros_like(inputs["energy"]).index_add(0, inputs[P.idx_m], r2)
        inputs["energy"] = inputs["energy"] + self.k * well
        return inputs


@pytest.fixture(scope="module")
def shapes():
    """A rattled nonlinear, an exactly linear, a diatomic and a one-atom molecule."""
    atoms = [molecule("CH3OH"), molecule("CO2"), molecule("CO"), Atoms("Ar")]
    atoms[0].rattle(0.02, seed=3)
    atoms[2].positions[1] += 0.05  # a stretched bond
    return atoms


def test_basis_is_orthonormal_and_spans_the_rigid_motions(shapes):
    batch = build_batch(shapes)
    n_atoms = batch[P.n_atoms]
    basis = rigid_basis(batch[P.R], n_atoms)
    # per molecule: rigid rank 6 (nonlinear), 5 (linear, diatomic), 3 (one atom)
    offsets = torch.cumsum(n_atoms, 0) - n_atoms
    for m, (n, rank) in enumerate(zip(n_atoms.tolist(), [6, 5, 5, 3])):
        atoms = slice(int(offsets[m]), int(offsets[m]) + n)
        rigid = basis.rigid[:, atoms].reshape(basis.rigid.shape[0], -1)
        comp = basis.complement[:, atoms].reshape(basis.complement.shape[0], -1)
        rigid = rigid[rigid.norm(dim=1) > 0]
        comp = comp[comp.norm(dim=1) > 0]
        assert rigid.shape[0] == rank and comp.shape[0] == 3 * n - rank
        full = torch.cat([rigid, comp])
        torch.testing.assert_close(
            full @ full.T, torch.eye(3 * n, dtype=full.dtype), atol=1e-12, rtol=0
        )
        # a translation lies in the rigid span
        shift = torch.tensor([0.3, -0.2, 0.9], dtype=full.dtype).repeat(n)
        torch.testing.assert_close(rigid.T @ (rigid @ shift), shift, atol=1e-12, rtol=0)
    assert basis.complement.shape[0] == 3 * 6 - 6


@pytest.mark.parametrize("rep", ["schnet", "painn"])
def test_rigid_products_equal_hessian_times_rigid_directions(rep, batch):
    model = make_potential(rep, [Hessian(mode="full", invariance="none")]).eval()
    hessian = model(clone_batch(batch))[properties.hessian]
    inputs, gradient = energy_and_gradient(model, batch)
    basis = rigid_basis(inputs[P.R], inputs[P.n_atoms])
    products = rigid_products(gradient, basis)
    direct = hessian_rows(gradient, inputs[P.R], basis.rigid, PassPlan(False))
    scale = hessian.abs().max()
    assert (products - direct).abs().max() < 1e-12 * scale


@pytest.mark.parametrize("rep", ["schnet", "painn"])
@pytest.mark.parametrize("invariance", ["rigid", "translation", "auto"])
def test_every_symmetry_gives_the_hessian_of_all_rows(rep, invariance, shapes, batch):
    for inputs in (build_batch(shapes), batch):
        reference = make_potential(rep, [Hessian(mode="full", invariance="none")])
        model = make_potential(rep, [Hessian(mode="full", invariance=invariance)])
        h_ref = reference.eval()(clone_batch(inputs))[properties.hessian]
        h = model.eval()(clone_batch(inputs))[properties.hessian]
        torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "passes",
    [
        {"chunk_size": 4, "memory_efficient": False},  # every graph kept
        {"chunk_size": 4, "retain_mb": 0.0},  # every graph recomputed in the backward
        {"chunk_size": 4, "retain_mb": 0.02},  # first chunk kept, the rest recomputed
    ],
)
def test_rigid_columns_train_through_the_forces(passes, batch):
    """Parameter gradients of a Hessian loss equal those of all-rows training with
    every graph kept, whatever the symmetry and the memory bound."""
    module = Hessian(passes=passes, invariance="rigid")
    hessian = make_potential("painn", [module]).train()(clone_batch(batch))
    bounded = "_MemoryBoundedRowsBackward" in graph_functions(
        hessian[properties.hessian]
    )
    assert bounded == passes.get("memory_efficient", True)
    target = torch.randn(int((batch[P.n_atoms] ** 2).sum()), 3, 3, dtype=torch.float64)
    reference = Hessian(passes={"memory_efficient": False}, invariance="none")
    grads = [
        hessian_loss_gradients(
            Hessian(passes=passes, invariance="rigid"), batch, target
        ),
        hessian_loss_gradients(reference, batch, target),
    ]
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], rtol=1e-9, atol=1e-12)


def test_non_invariant_energy_falls_back_to_all_rows_with_a_warning(batch):
    model = make_potential("schnet", [HarmonicWell(), Hessian(mode="full")]).eval()
    with pytest.warns(UserWarning, match="not invariant under rigid"):
        hessian = model(clone_batch(batch))[properties.hessian]
    reference = finite_difference_hessian(
        make_potential("schnet", [HarmonicWell(), spk.atomistic.Forces()]).eval(),
        batch,
        step=1e-4,
    )
    assert (hessian - reference).norm() / reference.norm() < 1e-6
    # decided once: the next call neither warns nor uses the symmetry
    assert model.output_modules[-1]._invariance_holds == {"rigid": False}
    again = model(clone_batch(batch))[properties.hessian]
    torch.testing.assert_close(again, hessian, rtol=0, atol=0)


def _judged_non_invariant(batch):
    """A SchNet model in a harmonic well whose Hessian module has judged the energy
    not rigid-motion invariant."""
    model = make_potential("schnet", [HarmonicWell(), Hessian(mode="full")]).eval()
    with pytest.warns(UserWarning, match="not invariant under rigid"):
        model(clone_batch(batch))
    assert model.output_modules[-1]._invariance_holds == {"rigid": False}
    return model


def test_the_invariance_verdict_is_not_saved_with_the_model(batch, tmp_path):
    """A verdict belongs to the process, device and precision that made it (e.g. a
    check failed under autocast): a saved model (torch.save of the whole model as
    spktrain's best_model, a pickle of the module) loads without it and checks
    again where it runs."""
    model = _judged_non_invariant(batch)
    module = model.output_modules[-1]
    assert not any("invariance" in key for key in model.state_dict())
    torch.save(model, tmp_path / "best_model")
    loaded = torch.load(tmp_path / "best_model", weights_only=False)
    assert loaded.output_modules[-1]._invariance_holds == {}
    assert pickle.loads(pickle.dumps(module))._invariance_holds == {}
    assert module._invariance_holds == {"rigid": False}  # the live one stays
    # where the loaded model runs the energy is invariant (no field): checked anew
    loaded.output_modules[1].k = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hessian = loaded(clone_batch(batch))[properties.hessian]
    assert loaded.output_modules[-1]._invariance_holds == {"rigid": True}
    reference = make_potential("schnet", [Hessian(mode="full", invariance="none")])
    torch.testing.assert_close(
        hessian,
        reference.eval()(clone_batch(batch))[properties.hessian],
        rtol=0,
        atol=1e-12,
    )


def test_models_saved_with_a_verdict_load_without_it(batch, tmp_path, monkeypatch):
    """Files written before the verdict was left out hold it; loading drops it."""
    model = _judged_non_invariant(batch)
    current = Hessian.__getstate__
    with monkeypatch.context() as earlier:  # how earlier releases pickled the module
        earlier.setattr(
            Hessian,
            "__getstate__",
            lambda self: {**current(self), "_invariance_holds": {"rigid": False}},
        )
        torch.save(model, tmp_path / "best_model")
    with zipfile.ZipFile(tmp_path / "best_model") as archive:
        data = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        assert b"_invariance_holds" in archive.read(data)
    loaded = torch.load(tmp_path / "best_model", weights_only=False)
    assert loaded.output_modules[-1]._invariance_holds == {}
    with pytest.warns(UserWarning, match="not invariant under rigid"):
        loaded(clone_batch(batch))  # checked again, and still not invariant
    assert loaded.output_modules[-1]._invariance_holds == {"rigid": False}


def test_explicit_rigid_symmetry_is_trusted(batch):
    """invariance='rigid' skips the check: wrong for a model that breaks it."""
    trusted = make_potential("schnet", [HarmonicWell(), Hessian(invariance="rigid")])
    checked = make_potential("schnet", [HarmonicWell(), Hessian(invariance="none")])
    h_trusted = trusted.eval()(clone_batch(batch))[properties.hessian]
    h_checked = checked.eval()(clone_batch(batch))[properties.hessian]
    assert (h_trusted - h_checked).abs().max() > 1e-3


def test_periodic_batches_use_translations_only(molecules):
    boxed = [a.copy() for a in molecules]
    for a in boxed:
        a.set_cell([14.0, 14.0, 14.0])
        a.center()
        a.pbc = True
    batch = build_batch(boxed)
    module = Hessian(mode="full")
    assert module._symmetry(batch) == "translation"
    assert module._symmetry(build_batch(molecules)) == "rigid"
    model = make_potential("painn", [module]).eval()
    reference = make_potential("painn", [Hessian(mode="full", invariance="none")])
    torch.testing.assert_close(
        model(clone_batch(batch))[properties.hessian],
        reference.eval()(clone_batch(batch))[properties.hessian],
        rtol=0,
        atol=1e-12,
    )
    assert module._invariance_holds == {"translation": True}


def test_full_hessian_function_with_and_without_basis(batch):
    inputs, gradient = energy_and_gradient(make_potential("schnet", []), batch)
    positions, n_atoms = inputs[P.R], inputs[P.n_atoms]
    plain = full_hessian(gradient, positions, n_atoms, PassPlan(False))
    basis = rigid_basis(positions, n_atoms)
    reduced = full_hessian(gradient, positions, n_atoms, PassPlan(False), basis=basis)
    torch.testing.assert_close(reduced, plain, rtol=0, atol=1e-12)
    assert basis.complement.shape[0] == 3 * int(n_atoms.max()) - 6


def test_unknown_invariance_is_rejected():
    with pytest.raises(ValueError, match="invariance"):
        Hessian(invariance="parity")


@pytest.mark.parametrize("rep", ["schnet", "painn"])
def test_float32_symmetry_is_as_accurate_as_all_rows(rep, molecules, shapes):
    """The rounded float32 basis adds no error beyond float32 passes themselves."""
    atoms = list(molecules) + list(shapes[:3])
    reference = make_potential(rep, [Hessian(invariance="none")]).eval()
    h64 = reference(build_batch(atoms))[properties.hessian]
    errors = {}
    for invariance in ("auto", "none"):
        model = make_potential(
            rep, [Hessian(invariance=invariance)], dtype=torch.float32
        ).eval()
        h32 = model(build_batch(atoms, dtype=torch.float32))[properties.hessian]
        errors[invariance] = float((h32.double() - h64).abs().max() / h64.abs().max())
    assert errors["auto"] < 1e-5
    assert errors["auto"] < 5 * errors["none"] + 1e-7


@pytest.mark.parametrize("device", device_params(meta=True))
@pytest.mark.parametrize("rotations", [True, False])
def test_rigid_basis_on_every_device(device, rotations, shapes, batch):
    """The basis is built on the positions' device from the host sizes and host
    positions alone (shapes on ``meta``), equal to the CPU basis elsewhere; its
    rigid products come out on the same device."""
    for inputs in (build_batch(shapes), batch):
        moved = on_device(inputs, device)
        n_atoms = moved[P.n_atoms]
        basis = rigid_basis(moved[P.R], n_atoms, rotations, registered(n_atoms))
        reference = rigid_basis(inputs[P.R], inputs[P.n_atoms], rotations)
        for name in ("rigid", "rotation_coeffs", "complement"):
            got, expected = getattr(basis, name), getattr(reference, name)
            assert got.shape == expected.shape and got.device.type == device, name
            if device != "meta":
                torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=1e-12)
        products = rigid_products(torch.ones_like(moved[P.R]), basis)
        assert products.shape == basis.rigid.shape
        assert products.device.type == device


@pytest.mark.parametrize("device", device_params(meta=True))
def test_sum_rule_residuals_stay_on_the_input_device(device):
    """Every tensor the residuals build lives on the input's device (the zeros of
    the translations were built on the CPU, which fails for any CUDA input)."""
    from schnetpack_hessian.rigid import sum_rule_residuals

    water = molecule("H2O")
    x = torch.tensor(water.positions, dtype=torch.float64)
    g = torch.randn(
        3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    a = torch.randn(
        9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    h = a + a.T
    rho = sum_rule_residuals(h.to(device), x.to(device), g.to(device))
    assert rho.shape == (6,) and rho.device.type == torch.device(device).type
    if device != "meta":
        on_cpu = sum_rule_residuals(h, x, g)
        torch.testing.assert_close(rho.cpu(), on_cpu)
