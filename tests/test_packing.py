"""Per-batch bookkeeping: host sizes once, device indices from them, the rigid basis."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import schnetpack.properties as P

from schnetpack_hessian import Hessian
from schnetpack_hessian.hessian import PassPlan, full_hessian
from schnetpack_hessian.layout import (
    as_square,
    atom_offsets,
    block_index,
    local_atom_index,
    molecule_index,
    square_to_blocks,
)
from schnetpack_hessian.packing import (
    Packing,
    packed_batch,
    packed_sizes,
    register_packing,
    registered,
)
from schnetpack_hessian.rigid import RANK_TOLERANCE, complement_width, rigid_basis
from schnetpack_hessian.steps import training_task
from schnetpack_hessian.testing import build_batch, energy_and_gradient, make_potential


def test_packing_reads_the_sizes_of_a_host_batch(batch):
    packing = Packing.from_batch(batch, keep_positions=True)
    assert packing.n_atoms == (3, 5, 8, 3)
    assert (packing.n_total, packing.max_atoms, packing.n_blocks) == (19, 8, 107)
    assert packing.periodic is False
    assert packing.positions.data_ptr() == batch[P.R].data_ptr()  # no copy
    assert Packing.from_batch(batch).positions is None


def test_device_indices_equal_the_layout_functions(batch):
    n_atoms = batch[P.n_atoms]
    packed = packed_batch(batch)
    torch.testing.assert_close(packed.offsets, atom_offsets(n_atoms))
    torch.testing.assert_close(packed.idx_m, molecule_index(n_atoms))
    torch.testing.assert_close(packed.local, local_atom_index(n_atoms))
    for got, expected in zip(packed.blocks, block_index(n_atoms)):
        torch.testing.assert_close(got, expected)
    atom, real = packed.slots
    assert atom.shape == real.shape == (4, 8)
    assert real.sum(1).tolist() == [3, 5, 8, 3]
    torch.testing.assert_close(atom[real], torch.arange(19))
    assert packed_batch(batch) is packed  # once per batch


def test_a_registered_packing_is_what_the_module_uses(batch):
    """The module takes the batch's flags from the registered host sizes, not from
    the device tensors."""
    register_packing(batch[P.n_atoms], Packing((3, 5, 8, 3), periodic=True))
    assert Hessian(mode="full")._symmetry(batch) == "translation"
    with pytest.raises(ValueError, match="3 molecule sizes for a batch of 4"):
        register_packing(batch[P.n_atoms], Packing((3, 5, 8)))


def test_the_task_reads_the_sizes_before_the_transfer(batch):
    task = training_task("schnet", "full")
    moved = task.transfer_batch_to_device(dict(batch), torch.device("cpu"), 0)
    packed = registered(moved[P.n_atoms])
    assert packed is not None and packed.packing.n_atoms == (3, 5, 8, 3)
    assert packed.packing.positions.data_ptr() == batch[P.R].data_ptr()
    assert packed.idx_m is moved[P.idx_m]  # the collate step's


def _hessians(atoms):
    """Full Hessians through the rigid basis of a registered batch (host positions)
    and of an unregistered one (sizes read from the tensors), and of all 3N rows."""
    batch = build_batch(atoms)
    inputs, gradient = energy_and_gradient(make_potential("schnet", []), batch)
    positions, n_atoms = inputs[P.R], inputs[P.n_atoms]
    with_host = register_packing(n_atoms, Packing.from_batch(batch, True))
    out = {}
    for name, packed in (("host", with_host), ("sizes", None)):
        if packed is None:
            n_atoms = n_atoms.clone()  # a batch nobody registered
        basis = rigid_basis(positions, n_atoms, packed=packed)
        hessian = full_hessian(gradient, positions, n_atoms, PassPlan(False), basis)
        out[name] = (basis, hessian)
    out["rows"] = full_hessian(gradient, positions, n_atoms, PassPlan(False))
    return with_host, out


def test_a_linear_largest_molecule_gets_its_extra_internal_direction():
    """CO2 (3 atoms, linear) has 3N - 5 = 4 internal directions, one more than the
    bent H2O of the same size: the host counts them from its positions."""
    with_host, out = _hessians([molecule("H2O"), molecule("CO2"), Atoms("Ar")])
    assert complement_width(with_host) == 4
    for name in ("host", "sizes"):
        basis, hessian = out[name]
        assert basis.complement.shape[0] == 4
        torch.testing.assert_close(hessian, out["rows"], rtol=0, atol=1e-12)


def test_a_rotation_near_the_tolerance_keeps_a_spare_pass():
    """A nearly linear molecule whose smallest rotation lies between the device's
    tolerance and the host's (twice as strict): the host reserves a pass for it, the
    device uses it as a rigid direction, the spare seed is zero, the Hessian exact."""
    delta = 6.4e-3
    bent = Atoms("OCO", positions=[[0, 0, 0], [1.16, 0, 0], [2.32, delta, 0]])
    centred = bent.positions - bent.positions.mean(0)
    inertia = (centred**2).sum() * torch.eye(3, dtype=torch.float64) - torch.tensor(
        centred.T @ centred
    )
    values = torch.linalg.eigvalsh(inertia).tolist()
    ratio = math.sqrt(values[0]) / max(math.sqrt(3), math.sqrt(values[-1]))
    assert RANK_TOLERANCE < ratio < 2 * RANK_TOLERANCE
    with_host, out = _hessians([bent, molecule("H2O")])
    assert complement_width(with_host) == 4
    basis, hessian = out["host"]
    rigid = basis.rigid[:, :3].reshape(basis.rigid.shape[0], -1)
    assert int((rigid.norm(dim=1) > 0).sum()) == 6  # the device kept the rotation
    spare = basis.complement[3, :3]
    assert torch.equal(spare, torch.zeros_like(spare))
    assert out["sizes"][0].complement.shape[0] == 3  # read from the device: exact
    scale = out["rows"].abs().max()
    assert (hessian - out["rows"]).abs().max() < 1e-9 * scale


def test_sizes_alone_register_once(batch):
    n_atoms = batch[P.n_atoms].clone()
    packed = packed_sizes(n_atoms)
    assert packed.packing.periodic is None and packed_sizes(n_atoms) is packed
    # a later look with the whole batch completes the flags in place
    whole = dict(batch, **{P.n_atoms: n_atoms})
    assert packed_batch(whole) is packed and packed.packing.periodic is False


def test_as_square_reads_every_layout_of_one_hessian():
    """Flat (9N²,), square (3N, 3N), per-atom rows (N, 9N), (N, 3, N, 3) and block
    (N², 3, 3) layouts give one matrix; any other shape is refused with the expected
    ones named."""
    rng = np.random.default_rng(0)
    square = rng.normal(size=(9, 9))
    per_atom = np.stack([square[3 * i : 3 * i + 3].reshape(-1) for i in range(3)])
    by_atom = np.einsum("aibj->aibj", square.reshape(3, 3, 3, 3))
    layouts = (square, square.reshape(81), per_atom, by_atom, square_to_blocks(square))
    for given in layouts:
        np.testing.assert_array_equal(as_square(given, 3), square)
    with pytest.raises(ValueError, match=r"shape \(9, 8\); for 3 atoms expected"):
        as_square(square[:, :8], 3)
