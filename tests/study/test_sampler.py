"""Size-bucketed batches: homogeneous, every structure once per epoch, same loss."""

import numpy as np
import pytest
import torch
import schnetpack.properties as structure

from schnetpack_hessian import Hessian, HessianOutput
from schnetpack_hessian.data.sampler import SizeBucketBatchSampler, structure_sizes
from schnetpack_hessian.testing import make_potential


@pytest.mark.parametrize("width", [1, 2])
def test_batches_are_size_homogeneous_and_cover_the_epoch(width):
    sizes = np.array([2, 5, 3, 3, 9, 2, 5, 4, 2, 3, 8, 9, 2])
    sampler = SizeBucketBatchSampler(sizes, batch_size=2, bucket_width=width, seed=3)
    for _ in range(3):
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
        for b in batches:
            assert len(b) <= 2
            assert len(set(sizes[b] // width)) == 1


def test_order_is_seeded_and_changes_between_epochs():
    sizes = np.repeat([3, 4, 5], 8)
    a = SizeBucketBatchSampler(sizes, batch_size=3, seed=1)
    b = SizeBucketBatchSampler(sizes, batch_size=3, seed=1)
    first, second = list(a), list(a)
    assert first == list(b)
    assert first != second
    b.set_epoch(0)
    assert list(b) == first
    assert list(SizeBucketBatchSampler(sizes, batch_size=3, seed=2)) != first


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="batch_size"):
        SizeBucketBatchSampler([3, 4], batch_size=0)


def _epoch_loss(model, loader):
    """Sum over structures of the per-structure loss terms (batching-invariant)."""
    hess = HessianOutput(loss="mse", loss_weight=1.0)
    energy, forces, hessian, seen = 0.0, 0.0, 0.0, []
    for batch in loader:
        batch = {
            k: v.to(torch.float64) if v.is_floating_point() else v
            for k, v in batch.items()
        }
        out = model(dict(batch))
        n_mol = len(batch[structure.n_atoms])
        energy += float(((out["energy"] - batch["energy"]) ** 2).sum())
        forces += float(((out["forces"] - batch["forces"]) ** 2).sum())
        hessian += float(hess.calculate_loss(out, batch)) * n_mol
        seen += batch[structure.idx].tolist()
    return np.array([energy, forces, hessian]), sorted(seen)


def test_epoch_loss_equals_the_plain_samplers(small_module):
    plain, bucketed = small_module(), small_module(size_buckets=1)
    plain.setup()
    bucketed.setup()
    sizes = structure_sizes(bucketed.train_dataset)
    assert len(set(sizes)) == 3  # the test needs mixed sizes
    model = make_potential("painn", [Hessian(mode="full")], n_atom_basis=8).train()
    loss_plain, seen_plain = _epoch_loss(model, plain.train_dataloader())
    loss_bucket, seen_bucket = _epoch_loss(model, bucketed.train_dataloader())
    assert seen_plain == seen_bucket == sorted(bucketed.train_dataset.subset_idx)
    np.testing.assert_allclose(loss_bucket, loss_plain, rtol=1e-10)
    for batch in bucketed.train_dataloader():
        assert len(set(batch[structure.n_atoms].tolist())) == 1
    # plain shuffling does mix sizes here, so the bucketed batches are a real change
    mixed = [
        len(set(b[structure.n_atoms].tolist())) > 1 for b in plain.train_dataloader()
    ]
    assert any(mixed)
