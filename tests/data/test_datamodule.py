"""HessianDataModule: both backends, splits, extrapolation sets, units, workers."""

import numpy as np
import pytest
import schnetpack.properties as structure
import torch

from schnetpack_hessian import properties as P
from schnetpack_hessian.data import (
    CriticalPointSplit,
    HessianDataError,
    HessianDataModule,
    RandomStructureSplit,
    ReactionSplit,
    open_dataset,
    write,
)
from schnetpack_hessian.data.testing import make_atoms


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same 36 structures (6 reactions, all kinds) as .db and .h5."""
    root = tmp_path_factory.mktemp("dm")
    atoms = make_atoms(36, seed=1, n_reactions=6)
    paths = {}
    for suffix in ("db", "h5"):
        paths[suffix] = root / f"data.{suffix}"
        write(paths[suffix], atoms)
    return paths


def _kinds(ds, idx):
    return {P.KINDS[int(c)] for c in ds.labels(P.kind)[idx]}


def _dm(path, split_file, **kwargs):
    args = dict(batch_size=4, num_workers=0, split_file=str(split_file))
    args.update(kwargs)
    dm = HessianDataModule(str(path), **args)
    dm.setup()
    return dm


@pytest.mark.parametrize("suffix", ["db", "h5"])
def test_random_split_and_reuse(files, tmp_path, suffix):
    split = tmp_path / "split.npz"
    dm = _dm(files[suffix], split, num_train=20, num_val=6, split_seed=3)
    assert (len(dm.train_idx), len(dm.val_idx), len(dm.test_idx)) == (20, 6, 10)
    assert not set(dm.train_idx) & set(dm.val_idx)
    again = _dm(files[suffix], split)  # sizes come from the split file
    assert again.train_idx == dm.train_idx and again.test_idx == dm.test_idx
    saved = np.load(split)
    assert {"train_idx", "val_idx", "test_idx", "extrapolation_irc_idx"} <= set(saved)


@pytest.mark.parametrize("suffix", ["db", "h5"])
def test_reaction_split_keeps_reactions_together(files, tmp_path, suffix):
    dm = _dm(
        files[suffix],
        tmp_path / "s.npz",
        num_train=3,
        num_val=1,
        num_test=2,
        splitting="reaction",
        split_seed=0,
    )
    reactions = dm.dataset.labels(P.reaction)
    sets = [set(reactions[idx]) for idx in (dm.train_idx, dm.val_idx, dm.test_idx)]
    assert [len(s) for s in sets] == [3, 1, 2]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(dm.train_idx) + len(dm.val_idx) + len(dm.test_idx) == 36


@pytest.mark.parametrize("suffix", ["db", "h5"])
def test_critical_point_protocol(files, tmp_path, suffix):
    dm = _dm(
        files[suffix],
        tmp_path / "s.npz",
        num_train=0.5,
        num_val=0.25,
        splitting="critical",
        split_seed=0,
    )
    ds = dm.dataset
    used = dm.train_idx + dm.val_idx + dm.test_idx
    assert _kinds(ds, used) <= set(P.CRITICAL_KINDS)
    assert len(used) == int(np.isin(ds.labels(P.kind), [0, 1, 2]).sum())
    for kind in ("irc", "nms"):
        loader = dm.extrapolation_dataloader(kind)
        n = 0
        for batch in loader:
            assert (batch[P.kind] == P.KINDS.index(kind)).all()
            n += len(batch[structure.n_atoms])
        assert n == 6
    with pytest.raises(HessianDataError, match="not an extrapolation kind"):
        dm.extrapolation_dataloader("ts")


def test_strategies_direct(files):
    ds = open_dataset(files["h5"])
    tr, va, te = RandomStructureSplit(seed=1).split(ds, 10, 5, None)
    assert len(tr) == 10 and len(va) == 5 and len(te) == 21
    tr, va, te = CriticalPointSplit(by_reaction=False, seed=1).split(ds, 6, 6, None)
    assert len(tr) + len(va) + len(te) == 18
    with pytest.raises(HessianDataError, match="reactions"):
        ReactionSplit().split(ds, 5, 5, None)


@pytest.mark.parametrize("suffix", ["db", "h5"])
def test_units_and_stats(files, tmp_path, suffix):
    ref = _dm(files[suffix], tmp_path / "a.npz", num_train=20, num_val=6, split_seed=0)
    kc = _dm(
        files[suffix],
        tmp_path / "a.npz",
        property_units={"energy": "kcal/mol", P.hessian: "kcal/mol/Ang^2"},
    )
    a, b = ref.val_dataset[0], kc.val_dataset[0]
    kcal = 23.060548012069496
    torch.testing.assert_close(b["energy"], a["energy"] * kcal)
    torch.testing.assert_close(b[P.hessian], a[P.hessian] * kcal, equal_nan=True)
    mean, std = ref.get_stats("energy", divide_by_atoms=True, remove_atomref=False)
    assert torch.isfinite(mean) and std > 0


def _batches(dm):
    return [b for b in dm.val_dataloader()] + [b for b in dm.test_dataloader()]


@pytest.mark.integration
def test_workers_h5_equals_db(files, tmp_path):
    out = {}
    for suffix in ("db", "h5"):
        dm = _dm(
            files[suffix],
            tmp_path / f"s_{suffix}.npz",  # a split file belongs to one data file
            num_train=20,
            num_val=8,
            split_seed=0,
            num_workers=2,
            batch_size=5,
        )
        torch.manual_seed(0)
        train = list(dm.train_dataloader())
        out[suffix] = train + _batches(dm)
    assert len(out["db"]) == len(out["h5"]) > 0
    for a, b in zip(out["db"], out["h5"]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype, k
            torch.testing.assert_close(a[k], b[k], equal_nan=True, rtol=0, atol=0)
    h = torch.cat([b[P.hessian] for b in out["h5"]])
    assert torch.isnan(h).any() and not torch.isnan(h).all()


def test_schnetpack_transforms_and_pickling(files, tmp_path):
    import pickle

    import schnetpack.transform as trn

    dm = _dm(
        files["h5"],
        tmp_path / "t.npz",
        num_train=20,
        num_val=6,
        transforms=[
            trn.ASENeighborList(cutoff=5.0),
            trn.RemoveOffsets("energy", remove_mean=True),
            trn.CastTo32(),
        ],
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch[P.hessian].dtype == torch.float32
    assert batch[P.kind].dtype == torch.int64
    assert structure.idx_i in batch
    ds = dm.train_dataset
    ds[0]  # opens the file in this process
    clone = pickle.loads(pickle.dumps(ds))  # as for spawned workers / DDP
    torch.testing.assert_close(clone[3][P.hessian], ds[3][P.hessian], equal_nan=True)


@pytest.mark.parametrize(
    "sizes",
    [{"num_train": 1.5}, {"num_val": -2}, {"num_test": 2.5}, {"num_train": True}],
)
def test_split_sizes_that_are_neither_counts_nor_fractions(files, sizes):
    name, value = next(iter(sizes.items()))
    with pytest.raises(
        HessianDataError,
        match=rf"HessianDataModule: {name}={value!r} is neither a count of structures",
    ):
        HessianDataModule(str(files["h5"]), batch_size=2, **sizes)


@pytest.mark.parametrize("suffix", ["db", "h5"])
def test_file_without_structures_is_a_sentence(tmp_path, suffix):
    path = tmp_path / f"empty.{suffix}"
    write(path, [])
    with pytest.raises(
        HessianDataError, match=f"empty.{suffix}: the file holds no structures"
    ):
        _dm(path, tmp_path / "split.npz", num_train=0.8, num_val=0.1)


def test_split_file_is_refused_for_other_data(files, tmp_path):
    """A split whose indices fit another data set of the same size is refused."""
    split = tmp_path / "split.npz"
    _dm(files["h5"], split, num_train=20, num_val=6, split_seed=0)
    other = tmp_path / "other.h5"
    write(other, make_atoms(36, seed=2, n_reactions=6))
    with pytest.raises(HessianDataError, match="drawn for .*data.h5 .*not for .*other"):
        _dm(other, split, num_train=20, num_val=6, split_seed=0)
    with pytest.raises(HessianDataError, match="delete .*split.npz"):
        _dm(other, split)


def test_split_file_is_refused_for_another_strategy(files, tmp_path):
    split = tmp_path / "split.npz"
    _dm(files["h5"], split, num_train=0.5, num_val=0.2, split_seed=0)
    with pytest.raises(
        HessianDataError,
        match="drawn by RandomStructureSplit\\(seed=0\\), but the data module splits "
        "by CriticalPointSplit",
    ):
        _dm(files["h5"], split, splitting="critical", num_train=2, num_val=1)
    with pytest.raises(HessianDataError, match="RandomStructureSplit\\(seed=1\\)"):
        _dm(files["h5"], split, num_train=0.5, num_val=0.2, split_seed=1)
    same = _dm(files["h5"], split, num_train=0.5, num_val=0.2, split_seed=0)
    assert len(same.train_idx) == 18


def test_split_file_without_record_is_refused(files, tmp_path):
    """Split files of earlier versions say nothing about their data."""
    split = tmp_path / "old.npz"
    np.savez(split, train_idx=np.arange(10), val_idx=np.arange(10, 15), test_idx=[])
    with pytest.raises(HessianDataError, match="earlier version.*delete .*old.npz"):
        _dm(files["db"], split)


def test_has_training_hessians(tmp_path):
    none = tmp_path / "none.h5"
    write(none, make_atoms(6, seed=0, missing_every=1))
    dm = _dm(none, tmp_path / "a.npz", num_train=4, num_val=1)
    assert not dm.has_training_hessians()
    some = tmp_path / "some.h5"
    write(some, make_atoms(6, seed=0, missing_every=2))
    assert _dm(some, tmp_path / "b.npz", num_train=4, num_val=1).has_training_hessians()


def test_strategy_record_is_the_same_in_every_process():
    """Parameters without a JSON form are recorded without memory addresses."""
    from schnetpack_hessian.data.splitting import strategy_record

    class Helper:
        pass

    a, b = ReactionSplit(seed=np.int64(1)), ReactionSplit(seed=1)
    a.helper, b.helper = Helper(), Helper()
    assert strategy_record(a) == strategy_record(b)
    assert strategy_record(a)["params"]["seed"] == 1


def test_loader_defaults_fit_the_device():
    from schnetpack_hessian.data.loading import _cores, loader_defaults

    assert loader_defaults("cpu") == (0, False)
    workers, pin = loader_defaults("cuda", local_ranks=1)
    assert pin and workers == max(0, min(4, _cores() - 1))
    assert loader_defaults("cuda", local_ranks=10 * _cores())[0] == 0


def test_auto_loader_settings_resolve_for_the_trainer(files, tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    dm = HessianDataModule(
        str(files["h5"]),
        batch_size=4,
        num_train=20,
        num_val=6,
        split_file=str(tmp_path / "split.npz"),
    )
    dm.trainer = pl.Trainer(accelerator="cpu", logger=False)
    dm.setup()
    assert (dm.num_workers, dm.num_val_workers, dm._pin_memory) == (0, 0, False)
    assert dm.train_dataloader().num_workers == 0
    explicit = HessianDataModule(
        str(files["h5"]),
        batch_size=4,
        num_workers=1,
        pin_memory=True,
        split_file=str(tmp_path / "split.npz"),
    )
    explicit.setup()
    assert (explicit.num_workers, explicit.num_test_workers) == (1, 1)
    assert explicit._pin_memory is True
