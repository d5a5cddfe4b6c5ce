"""Size-bucketed batches: homogeneous, every structure once per epoch, same loss."""

import numpy as np
import pytest
import torch
import schnetpack.properties as structure

from schnetpack_hessian import Hessian, HessianOutput
from schnetpack_hessian.data.sampler import (
    MixBatchSampler,
    SizeBucketBatchSampler,
    structure_sizes,
)
from schnetpack_hessian.testing import make_potential, quiet_trainer, run_as_script


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


def _record_ddp_batches(data_file, out_dir):
    """Two gloo ranks train two epochs on size buckets; each rank writes the dataset
    indices and atom counts of the batches it saw, and the module's training split."""
    import datetime
    import json

    import pytorch_lightning as pl
    from pytorch_lightning.strategies import DDPStrategy

    from schnetpack_hessian.data import HessianDataModule

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, _):
            self.seen.append(
                dict(
                    epoch=self.current_epoch,
                    idx=batch["_idx"].tolist(),
                    n_atoms=batch[structure.n_atoms].tolist(),
                )
            )
            return (self.w**2).sum() + 1.0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def on_train_end(self):
            rank = self.trainer.global_rank
            record = dict(seen=self.seen, train_idx=list(map(int, dm.train_idx)))
            with open(f"{out_dir}/rank{rank}.json", "w") as f:
                json.dump(record, f)

    dm = HessianDataModule(
        data_file,
        batch_size=3,
        num_train=23,
        num_val=4,
        split_file=f"{out_dir}/split.npz",
        num_workers=0,
        size_buckets=1,
    )
    trainer = quiet_trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(
            process_group_backend="gloo", timeout=datetime.timedelta(seconds=60)
        ),
        max_epochs=2,
        limit_val_batches=0,
    )
    trainer.fit(Recorder(), datamodule=dm)


@pytest.mark.integration
def test_lightning_ddp_gives_two_ranks_disjoint_equal_shares_of_the_epoch(tmp_path):
    """Lightning injects its DistributedSampler into the size-bucket sampler (it used
    to stop with a TypeError): per epoch the two ranks run equally many batches,
    disjoint, one bucket each, whose union is the training split."""
    import json

    from schnetpack_hessian.data import write
    from schnetpack_hessian.data.testing import make_atoms

    data_file = tmp_path / "data.h5"
    write(data_file, make_atoms(36, seed=1, n_reactions=6))
    done = run_as_script(
        __file__, "_record_ddp_batches", str(data_file), str(tmp_path), cwd=tmp_path
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    train_idx = sorted(ranks[0]["train_idx"])
    assert len(train_idx) == 23
    for epoch in (0, 1):
        shares = [[s for s in r["seen"] if s["epoch"] == epoch] for r in ranks]
        assert len(shares[0]) == len(shares[1]) > 0
        indices = [[i for s in share for i in s["idx"]] for share in shares]
        assert not set(indices[0]) & set(indices[1])
        assert sorted(indices[0] + indices[1]) == train_idx
        for share in shares:
            for s in share:
                assert len(set(s["n_atoms"])) == 1 and len(s["idx"]) <= 3
    orders = [[s["idx"] for s in ranks[0]["seen"] if s["epoch"] == e] for e in (0, 1)]
    assert orders[0] != orders[1]  # a new order each epoch


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_distributed_shares_are_equal_disjoint_and_cover_the_epoch(n_ranks):
    """Without Lightning: each rank's sampler gets a DistributedSampler; 13 structures
    in batches of 2 make 8 batches, which do not divide by 3 (a batch is halved)."""
    from torch.utils.data import DistributedSampler

    sizes = np.array([2, 5, 3, 3, 9, 2, 5, 4, 2, 3, 8, 9, 2])
    shares = []
    for rank in range(n_ranks):
        dist = DistributedSampler(range(len(sizes)), n_ranks, rank, seed=7)
        sampler = SizeBucketBatchSampler(sizes, batch_size=2, seed=rank, sampler=dist)
        sampler.set_epoch(4)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler)
    assert len({len(s) for s in shares}) == 1
    flat = [i for share in shares for b in share for i in b]
    assert sorted(flat) == list(range(len(sizes)))  # disjoint, and the whole epoch
    for b in (b for share in shares for b in share):
        assert len(set(sizes[b])) == 1


def test_fewer_structures_than_ranks_repeat_a_batch():
    from torch.utils.data import DistributedSampler

    shares = [
        list(SizeBucketBatchSampler([3], 4, sampler=DistributedSampler([0], 2, r)))
        for r in (0, 1)
    ]
    assert shares == [[[0]], [[0]]]


def test_mixed_batches_hold_both_populations_in_the_ratio():
    """mix={hessian: 1, ef_only: 4}: every batch of 10 holds 2 structures with a
    Hessian and 8 without; the scarce population is cycled, each population is
    covered every epoch, and the order is seeded."""
    has_hessian = np.zeros(60, dtype=bool)
    has_hessian[[3, 17, 29, 44, 58]] = True
    sampler = MixBatchSampler(has_hessian, {"hessian": 1, "ef_only": 4}, 10, seed=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 7  # every one of the 55 E/F-only: 7 × 8
    for batch in batches:
        assert len(batch) == 10 and has_hessian[batch].sum() == 2
    seen = [i for b in batches for i in b]
    assert set(seen) == set(range(60))  # every structure at least once per epoch
    assert sum(has_hessian[seen]) == 14  # the 5 Hessian structures, cycled
    assert len(set(i for i in seen if not has_hessian[i])) == 55
    again = MixBatchSampler(has_hessian, {"hessian": 1, "ef_only": 4}, 10, seed=2)
    assert list(again) == batches and list(again) != batches  # next epoch differs


def test_mixed_batches_are_shared_out_among_ranks():
    from torch.utils.data import DistributedSampler

    has_hessian = np.arange(40) % 5 == 0
    shares = []
    for rank in range(2):
        ranks = DistributedSampler(range(40), num_replicas=2, rank=rank, seed=7)
        shares.append(
            list(
                MixBatchSampler(
                    has_hessian, {"hessian": 1, "ef_only": 1}, 8, sampler=ranks
                )
            )
        )
    assert len(shares[0]) == len(shares[1]) == 4  # 8 batches: 32 E/F-only, 4 a batch
    for batch in shares[0] + shares[1]:
        assert abs(int(has_hessian[batch].sum()) - len(batch) / 2) <= 1


def test_a_mix_the_data_cannot_give_is_refused():
    with pytest.raises(ValueError, match="'hessian' structures per batch, but"):
        MixBatchSampler(np.zeros(10, dtype=bool), {"hessian": 1, "ef_only": 4}, 5)
    with pytest.raises(ValueError, match="non-negative weights"):
        MixBatchSampler(np.ones(10, dtype=bool), {"hessians": 1}, 5)


def test_data_module_mixes_its_training_split(tmp_path):
    """HessianDataModule(mix=...): the training loader's batches come from the
    sampler, with the ratio of structures with and without a Hessian."""
    from schnetpack_hessian.data import HessianDataModule, write
    from schnetpack_hessian.data.testing import make_atoms

    path = tmp_path / "mixed.h5"
    write(path, make_atoms(n_structures=40, seed=1, missing_every=2))
    dm = HessianDataModule(
        str(path),
        batch_size=4,
        num_train=30,
        num_val=10,
        split_file=str(tmp_path / "split.npz"),
        mix={"hessian": 1, "ef_only": 1},
    )
    dm.setup()
    for batch in dm.train_dataloader():
        n_atoms = batch[structure.n_atoms].tolist()
        blocks = torch.split(batch["hessian"], [n * n for n in n_atoms])
        with_hessian = sum(not torch.isnan(b).all() for b in blocks)
        assert len(n_atoms) == 4 and with_hessian == 2
