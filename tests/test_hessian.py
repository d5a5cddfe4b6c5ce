"""The Hessian output module: exactness, layout, modes, errors."""

import pickle
import warnings

import pytest
import torch

import schnetpack as spk
import schnetpack.properties as P

from schnetpack_hessian import Hessian, properties
from schnetpack_hessian.hessian import (
    PROBES,
    CPU_VECTORIZE_MAX_PAIRS,
    HessianKeys,
    HessianSchedule,
    ProbeSettings,
    grouped_arguments,
    PassPlan,
    PassSettings,
    was_computed,
    HessianError,
    hessian_rows,
    products_to_blocks,
    row_seeds,
    sample_probes,
    seeded_products,
)
from schnetpack_hessian.layout import blocks_to_square
from schnetpack_hessian.packing import registered
from schnetpack_hessian.testing import (
    clone_batch,
    build_batch,
    device_params,
    energy_and_gradient,
    finite_difference_hessian,
    hessian_loss_gradients,
    make_potential,
    on_device,
)

REPRESENTATIONS = ["schnet", "painn"]


def squares(blocks, n_atoms):
    """Split a packed (ΣN², 3, 3) Hessian into per-molecule (3N, 3N) matrices."""
    return [
        blocks_to_square(b)
        for b in torch.split(blocks, [n * n for n in n_atoms.tolist()])
    ]


@pytest.mark.parametrize("rep", REPRESENTATIONS)
def test_full_hessian_matches_finite_differences(rep, batch):
    model = make_potential(rep, [Hessian(mode="full")]).eval()
    hessian = model(clone_batch(batch))[properties.hessian]
    reference = finite_difference_hessian(
        make_potential(rep, [spk.atomistic.Forces()]).eval(), batch, step=1e-4
    )
    assert hessian.shape == reference.shape
    rel = (hessian - reference).norm() / reference.norm()
    assert rel < 1e-6, f"relative error {rel:.2e}"


def test_training_hessian_with_the_auto_memory_bound_is_exact(batch):
    """retain_mb='auto' (the default): the training Hessian equals finite
    differences and its loss trains the parameters as keeping every graph does."""
    module = Hessian(mode="full")
    assert module.passes.retain_mb == "auto"
    hessian = make_potential("painn", [module]).train()(clone_batch(batch))
    reference = finite_difference_hessian(
        make_potential("painn", [spk.atomistic.Forces()]).eval(), batch, step=1e-4
    )
    rel = (hessian[properties.hessian].detach() - reference).norm() / reference.norm()
    assert rel < 1e-6, f"relative error {rel:.2e}"
    target = torch.randn(reference.shape, dtype=torch.float64)
    auto = hessian_loss_gradients(Hessian(mode="full"), batch, target)
    keep = Hessian(mode="full", passes={"memory_efficient": False})
    for name, grad in hessian_loss_gradients(keep, batch, target).items():
        torch.testing.assert_close(auto[name], grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rep", REPRESENTATIONS)
@pytest.mark.parametrize("n_mol", [1, 2, 4])
def test_full_hessian_equals_response_and_is_symmetric(rep, n_mol, molecules):
    batch = build_batch(molecules[-n_mol:])
    ours = make_potential(rep, [Hessian(mode="full")]).eval()
    response = make_potential(
        rep, [spk.atomistic.Response("energy", ["forces", "hessian"])]
    )
    response.load_state_dict(ours.state_dict())
    response.eval()
    h_ours = ours(clone_batch(batch))[properties.hessian]
    out = response(clone_batch(batch))
    torch.testing.assert_close(h_ours, out[P.hessian], rtol=0, atol=1e-12)
    for square in squares(h_ours, batch[P.n_atoms]):
        torch.testing.assert_close(square, square.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 7])
@pytest.mark.parametrize("vectorize", [True, False])
def test_chunking_and_vectorisation_do_not_change_the_hessian(
    chunk_size, vectorize, batch
):
    reference = make_potential("painn", [Hessian(mode="full")]).eval()(
        clone_batch(batch)
    )
    model = make_potential(
        "painn",
        [
            Hessian(
                mode="full", passes={"chunk_size": chunk_size, "vectorize": vectorize}
            )
        ],
    ).eval()
    out = model(clone_batch(batch))
    torch.testing.assert_close(
        out[properties.hessian], reference[properties.hessian], rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("probe", ["gaussian", "rademacher", "rows"])
@pytest.mark.parametrize("rep", REPRESENTATIONS)
def test_every_hvp_equals_hessian_times_its_probe(probe, rep, batch):
    full = make_potential(rep, [Hessian(mode="full")]).eval()(clone_batch(batch))
    model = make_potential(rep, [Hessian(mode="hvp", probes=dict(kind=probe, n=5))])
    out = model.train()(clone_batch(batch))
    hvp, probes = out[properties.hessian_hvp], out[properties.hessian_probes]
    assert hvp.shape == probes.shape == (5, batch[P.R].shape[0], 3)
    assert hvp.requires_grad
    n_atoms = batch[P.n_atoms]
    offsets = torch.cumsum(n_atoms, 0) - n_atoms
    for m, square in enumerate(squares(full[properties.hessian], n_atoms)):
        lo, n = int(offsets[m]), int(n_atoms[m])
        v = probes[:, lo : lo + n].reshape(5, 3 * n)
        expected = (v @ square.T).reshape(5, n, 3)
        torch.testing.assert_close(
            hvp[:, lo : lo + n].detach(), expected, rtol=0, atol=1e-11
        )


def test_row_probes_are_distinct_one_hot_rows_per_molecule(batch):
    n_atoms = batch[P.n_atoms]
    probes = sample_probes("rows", 6, n_atoms, torch.float64)
    offsets = (torch.cumsum(n_atoms, 0) - n_atoms).tolist()
    for lo, n in zip(offsets, n_atoms.tolist()):
        block = probes[:, lo : lo + n].reshape(6, 3 * n)
        assert torch.all(block.sum(1) == 1) and torch.all((block == 0) | (block == 1))
        rows = block.argmax(1)
        assert len(set(rows.tolist())) == min(6, 3 * n)


def test_probes_are_redrawn_every_call_and_seedable(batch):
    out = [
        make_potential(
            "schnet", [Hessian(mode="hvp", probes=dict(n=2, seed=s))]
        ).train()(clone_batch(batch))[properties.hessian_probes]
        for s in (3, 3)
    ]
    torch.testing.assert_close(out[0], out[1])
    model = make_potential(
        "schnet", [Hessian(mode="hvp", probes=dict(n=2, seed=3))]
    ).train()
    first = model(clone_batch(batch))[properties.hessian_probes]
    second = model(clone_batch(batch))[properties.hessian_probes]
    assert not torch.equal(first, second)


def test_row_seeds_select_the_same_row_in_every_molecule(batch):
    n_atoms = batch[P.n_atoms]
    seeds = row_seeds(n_atoms, torch.tensor([0, 5, 10]), torch.float64)
    # row 10 = atom 3, z: exists in CH4 (5 atoms) and C2H6 (8), not in H2O or HCN
    per_mol = torch.split(seeds[2].sum(-1), n_atoms.tolist())
    assert [int(p.sum()) for p in per_mol] == [0, 1, 1, 0]


@pytest.mark.parametrize("rep", REPRESENTATIONS)
def test_eval_mode_gives_the_training_values_without_graph(rep, batch):
    model = make_potential(
        rep, [Hessian(mode="full", passes={"memory_efficient": False})]
    )
    train = model.train()(clone_batch(batch))
    evaluated = model.eval()(clone_batch(batch))
    assert train[properties.hessian].requires_grad
    assert not evaluated[properties.hessian].requires_grad
    assert not evaluated[P.forces].requires_grad
    for key in (properties.hessian, P.forces):
        torch.testing.assert_close(
            evaluated[key], train[key].detach(), rtol=0, atol=1e-12
        )


def test_forces_replace_spk_forces(batch):
    ours = make_potential("painn", [Hessian(mode="hvp")]).eval()(clone_batch(batch))
    theirs = make_potential("painn", [spk.atomistic.Forces()]).eval()(
        clone_batch(batch)
    )
    torch.testing.assert_close(ours[P.forces], theirs[P.forces], rtol=0, atol=1e-13)


@pytest.mark.parametrize("retain_mb", [0.0, 0.02])
def test_memory_efficient_backward_gives_the_same_parameter_gradients(retain_mb, batch):
    """Recomputed (all, or all but the first chunk) == every graph kept."""
    target = torch.randn(int((batch[P.n_atoms] ** 2).sum()), 3, 3, dtype=torch.float64)
    grads = [
        hessian_loss_gradients(
            Hessian(
                passes=dict(
                    chunk_size=5, memory_efficient=efficient, retain_mb=retain_mb
                )
            ),
            batch,
            target,
        )
        for efficient in (True, False)
    ]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(
            grads[0][name], grads[1][name], rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize(
    "retain_bytes, recomputed, kept",
    [(None, False, True), (0, True, False), (1, True, True)],
)
def test_retain_budget_splits_kept_and_recomputed_graphs(
    retain_bytes, recomputed, kept, batch
):
    """None keeps all graphs, 0 recomputes all, a tiny budget keeps the first chunk."""
    inputs, gradient = energy_and_gradient(make_potential("schnet", []).train(), batch)
    positions = inputs[P.R]
    seeds = torch.randn(7, *positions.shape, dtype=positions.dtype)
    products = seeded_products(
        gradient,
        positions,
        seeds,
        PassPlan(create_graph=True, chunk_size=3, retain_bytes=retain_bytes),
    )
    top = products.grad_fn
    parts = [f for f, _ in top.next_functions] if "Cat" in top.name() else [top]
    names = {type(f).__name__ for f in parts}
    bounded = "_MemoryBoundedRowsBackward"
    assert (bounded in names) == recomputed
    assert any(n != bounded for n in names) == kept
    direct = hessian_rows(gradient, positions, seeds, PassPlan(create_graph=False))
    torch.testing.assert_close(products.detach(), direct, rtol=0, atol=1e-12)


def test_training_in_one_process_does_not_warn_about_ddp(batch):
    """The DDP warning (tests/test_ddp.py) needs a process group of several."""
    model = make_potential("schnet", [Hessian(mode="hvp")]).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(clone_batch(batch))[properties.hessian_hvp].sum().backward()


def test_energy_only_model_without_forces_module(batch):
    model = make_potential("schnet", [Hessian(mode="full", calc_forces=False)]).eval()
    out = model(clone_batch(batch))
    assert P.forces not in out and out[properties.hessian].shape[1:] == (3, 3)


def test_float32_and_single_molecule(molecules):
    batch = build_batch(molecules[:1], dtype=torch.float32)
    model = make_potential("painn", [Hessian(mode="full")], dtype=torch.float32).eval()
    out = model(batch)
    assert out[properties.hessian].dtype == torch.float32
    assert out[properties.hessian].shape == (9, 3, 3)


def test_clear_error_when_positions_do_not_require_grad(batch):
    hessian = Hessian(mode="full")
    inputs = clone_batch(batch)
    inputs["energy"] = inputs[P.R].sum().reshape(1)
    with pytest.raises(HessianError, match="do not require grad"):
        hessian(inputs)


def test_clear_error_when_energy_key_is_missing(batch):
    model = make_potential("schnet", [Hessian(mode="full", energy_key="total_energy")])
    with pytest.raises(HessianError, match="total_energy"):
        model(clone_batch(batch))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "exact"},
        {"probes": {"kind": "sobol"}},
        {"probes": {"n": 0}},
        {"probes": {"n": 2.5}},
        {"probes": {"count": 2}},
        {"keys": {"hesian": "h"}},
        {"passes": {"chunk_size": 0}},
        {"passes": {"retain_mb": -1}},
        {"passes": {"chunk_size": "big"}},
        {"passes": {"chunk": 4}},
        {"schedule": {"training": "hvp"}},  # mode="full" makes no probe products
        {"schedule": {"testing": "full"}},
    ],
)
def test_bad_configuration_is_rejected_at_construction(kwargs):
    with pytest.raises(ValueError):
        Hessian(**kwargs)


def test_passes_are_vectorised_on_small_cpu_batches_only(molecules, batch):
    """'auto' vectorises (16 seeds per pass) below the pair threshold, loops above."""

    def settings(module, inputs):
        plan = module.passes.plan(inputs, create_graph=False)
        return plan.vectorize, plan.chunk_size

    small = settings(Hessian(), batch)
    assert small == (True, 16)
    many = build_batch(molecules * 12)
    assert many[P.idx_i].shape[0] > CPU_VECTORIZE_MAX_PAIRS
    assert settings(Hessian(), many) == (False, 4)
    loop = Hessian(passes={"vectorize": False, "chunk_size": None})
    assert settings(loop, batch) == (False, None)
    assert settings(Hessian(passes={"vectorize": True, "chunk_size": 3}), many) == (
        True,
        3,
    )


def test_schedule_decides_the_outputs_and_what_each_phase_computes(batch):
    module = Hessian(mode="hvp", schedule={"training": True}, probes=dict(n=2))
    assert module.schedule == HessianSchedule(training="hvp", evaluation="hvp")
    assert properties.hessian not in module.model_outputs
    model = make_potential("schnet", [module])
    out = model.eval()(clone_batch(batch))
    assert was_computed(out, properties.hessian_hvp)
    assert properties.hessian not in out
    module.set_schedule(evaluation="full")
    model.collect_outputs()
    assert properties.hessian in module.model_outputs
    out = model.eval()(clone_batch(batch))
    assert was_computed(out, properties.hessian) and was_computed(
        out, properties.hessian_hvp
    )
    out = model.train()(clone_batch(batch))
    assert not was_computed(out, properties.hessian)  # placeholder in training
    assert was_computed(out, properties.hessian_hvp)
    module.set_schedule(training="none")
    out = model.train()(clone_batch(batch))
    assert not was_computed(out, properties.hessian_hvp)
    assert out[P.forces].requires_grad  # E+F training still works


def test_the_module_declares_what_it_computed_with_markers(batch):
    """Each derivative key comes with a marker the consumers read; the marker, not
    the value's shape, decides (a marker of a skipped output makes even a filled
    value count as not computed), and it stays readable after a device move."""
    module = Hessian(mode="hvp", schedule={"training": "none"}, probes=dict(n=1))
    model = make_potential("schnet", [module])
    marker = properties.computed(properties.hessian_hvp)
    assert marker in module.model_outputs
    skipped = model.train()(clone_batch(batch))
    assert skipped[marker].shape == (0,) and not was_computed(
        skipped, properties.hessian_hvp
    )
    skipped[properties.hessian_hvp] = torch.ones(1, 2, 3)
    assert not was_computed(skipped, properties.hessian_hvp)
    done = model.eval()(clone_batch(batch))
    assert done[marker].shape == (1,) and was_computed(done, properties.hessian_hvp)
    moved = {k: v.to("meta") for k, v in done.items()}
    assert was_computed(moved, properties.hessian_hvp)  # host metadata, no read
    assert was_computed({properties.hessian: torch.ones(4, 3, 3)}, properties.hessian)


def test_keywords_of_the_unreleased_constructor_are_refused():
    """The flags and pass settings take ``schedule=`` and ``passes=`` only; modules
    pickled with the old attributes still load (next test)."""
    for old in ({"full_in_eval": True}, {"in_training": False}, {"chunk_size": 3}):
        with pytest.raises(TypeError, match=next(iter(old))):
            Hessian(mode="hvp", **old)


def test_modules_pickled_by_earlier_releases_load_with_their_meaning(batch):
    """A module whose state holds the old flags unpickles into the schedule they
    meant, and computes the same Hessian."""
    module = Hessian(mode="hvp", schedule={"evaluation": "full"}, probes=dict(n=1))
    state = dict(module.__dict__)
    del state["schedule"], state["passes"]
    state.update(in_training=False, full_in_eval=True, chunk_size=2, vectorize=False,
                 memory_efficient=True, retain_mb=128.0)  # fmt: skip
    old = Hessian.__new__(Hessian)
    old.__dict__.update(state)
    restored = pickle.loads(pickle.dumps(old))
    assert restored.schedule == HessianSchedule(training="none", evaluation="full")
    assert restored.passes == PassSettings(
        chunk_size=2, vectorize=False, memory_efficient=True, retain_mb=128.0
    )
    reference = make_potential("painn", [Hessian(mode="full")]).eval()
    model = make_potential("painn", [restored]).eval()
    torch.testing.assert_close(
        model(clone_batch(batch))[properties.hessian],
        reference(clone_batch(batch))[properties.hessian],
        rtol=0,
        atol=1e-12,
    )


def test_modules_with_flat_keys_and_probes_load_grouped():
    """A module pickled before ``keys``/``probes`` (flat ``hessian_key``,
    ``n_probes``, ``probe``, ``seed`` attributes) and an exported configuration
    with those arguments both come back with the same settings grouped."""
    module = Hessian(mode="hvp")
    state = dict(module.__dict__)
    del state["keys"], state["probes"]
    state.update(hessian_key="h", hvp_key="hv", probes_key="pv", n_probes=3,
                 probe="rows", seed=4)  # fmt: skip
    old = Hessian.__new__(Hessian)
    old.__dict__.update(state)
    restored = pickle.loads(pickle.dumps(old))
    assert restored.keys == HessianKeys(hessian="h", hvp="hv", probes="pv")
    assert restored.probes == ProbeSettings(n=3, kind="rows", seed=4)
    assert (restored.hessian_key, restored.n_probes, restored.probe) == ("h", 3, "rows")
    flat = {"mode": "hvp", "hessian_key": "h", "n_probes": 2, "probe": "rows"}
    rebuilt = Hessian(**grouped_arguments(flat))
    assert rebuilt.keys == HessianKeys(hessian="h")
    assert rebuilt.probes == ProbeSettings(n=2, kind="rows")


@pytest.mark.parametrize("n_probes", [2.5, 2.0, True, "2"])
def test_n_probes_must_be_an_integer(n_probes):
    with pytest.raises(
        ValueError,
        match=rf"Hessian: n_probes must be an integer >= 1 \(probes per molecule\), "
        rf"got {n_probes!r}",
    ):
        Hessian(mode="hvp", probes=dict(n=n_probes))


@pytest.mark.parametrize("device", device_params())
def test_hessian_and_its_products_on_every_device(device, batch):
    """On each device the full Hessian matches central differences of the CPU
    forces, and each Hessian-vector product of training is the Hessian times its
    probe."""
    reference = finite_difference_hessian(
        make_potential("painn", [spk.atomistic.Forces()]).eval(), batch, step=1e-4
    )
    full = make_potential("painn", [Hessian(mode="full")]).to(device).eval()
    hessian = full(on_device(batch, device))[properties.hessian]
    assert hessian.device.type == device
    rel = (hessian.cpu() - reference).norm() / reference.norm()
    assert rel < 1e-6, f"relative error {rel:.2e}"
    model = make_potential("painn", [Hessian(mode="hvp", probes=dict(n=3, seed=1))])
    out = model.to(device).train()(on_device(batch, device))
    hvp, probes = out[properties.hessian_hvp].cpu(), out[properties.hessian_probes]
    assert hvp.requires_grad and probes.device.type == device
    n_atoms = batch[P.n_atoms]
    offsets = torch.cumsum(n_atoms, 0) - n_atoms
    for m, square in enumerate(squares(hessian.cpu(), n_atoms)):
        lo, n = int(offsets[m]), int(n_atoms[m])
        v = probes.cpu()[:, lo : lo + n].reshape(3, 3 * n)
        expected = (v @ square.T).reshape(3, n, 3)
        torch.testing.assert_close(
            hvp[:, lo : lo + n].detach(), expected, rtol=0, atol=1e-11
        )


@pytest.mark.parametrize("device", device_params(meta=True))
def test_seeds_probes_and_blocks_on_every_device(device, batch):
    """The layout of seeds, probes and Hessian blocks is built on the batch's device
    from the host sizes alone (on ``meta`` there is nothing else to read)."""
    moved = on_device(batch, device)
    n_atoms = moved[P.n_atoms]
    packed = registered(n_atoms)
    n_total, n_blocks = packed.packing.n_total, packed.packing.n_blocks
    rows = torch.arange(3 * packed.packing.max_atoms, device=device)
    seeds = row_seeds(n_atoms, rows, torch.float64, packed)
    blocks = products_to_blocks(seeds, seeds, n_atoms, packed)
    assert seeds.shape == (rows.shape[0], n_total, 3)
    assert blocks.shape == (n_blocks, 3, 3)
    assert seeds.device.type == blocks.device.type == device
    for probe in PROBES:
        drawn = sample_probes(probe, 2, n_atoms, torch.float64, None, packed)
        assert drawn.shape == (2, n_total, 3) and drawn.device.type == device
    if device == "meta":
        return
    cpu_rows = torch.arange(rows.shape[0])
    torch.testing.assert_close(
        seeds.cpu(), row_seeds(batch[P.n_atoms], cpu_rows, torch.float64)
    )
    # Σ_s e_s e_sᵀ over every row is the identity of each molecule
    for square in squares(blocks.cpu(), batch[P.n_atoms]):
        torch.testing.assert_close(square, torch.eye(square.shape[0]).double())
