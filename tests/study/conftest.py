"""Fixtures of the study tests: a small labelled training file."""

import pytest
import schnetpack.transform as trn

from schnetpack_hessian.data import HessianDataModule, write
from schnetpack_hessian.data.testing import make_atoms


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """30 random molecules of 2-5 atoms, all with Hessians, 5 reactions, all kinds."""
    path = tmp_path_factory.mktemp("study") / "small.h5"
    write(path, make_atoms(30, seed=5, missing_every=0, n_reactions=5, sizes=(2, 3, 5)))
    return path


@pytest.fixture
def small_module(small_file, tmp_path):
    """``small_module(**options)``: a HessianDataModule on ``small_file`` (20 train,
    5 val, split seed 0, neighbour lists only unless ``transforms`` is given)."""

    def _make(**options):
        args = dict(
            batch_size=4,
            num_train=20,
            num_val=5,
            split_file=str(tmp_path / "split.npz"),
            split_seed=0,
            num_workers=0,
            transforms=[trn.MatScipyNeighborList(cutoff=5.0)],
        )
        args.update(options)
        return HessianDataModule(str(small_file), **args)

    return _make
