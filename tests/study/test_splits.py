"""The study's split files are tied to the study's data file."""

import pytest

from schnetpack_hessian.data import HessianDataError, HessianDataModule, write
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian.study.splits import RunSplit, write_split_file


def test_study_split_file_loads_for_its_data_only(tmp_path):
    data = tmp_path / "data.h5"
    write(data, make_atoms(12, seed=0))
    split = RunSplit([0, 1, 2, 3], [4, 5], [6], [7, 8, 9], [2])
    path = write_split_file(split, [7, 8], tmp_path / "s" / "a.npz", data, 12)
    # any strategy the recipe names: the study gave the indices
    dm = HessianDataModule(
        str(data),
        batch_size=2,
        num_workers=0,
        split_file=str(path),
        splitting="critical",
    )
    dm.setup()
    assert (dm.train_idx, dm.val_idx, dm.test_idx) == ([0, 1, 2, 3], [4, 5], [7, 8])
    other = tmp_path / "other.h5"
    write(other, make_atoms(12, seed=1))
    dm = HessianDataModule(
        str(other), batch_size=2, num_workers=0, split_file=str(path)
    )
    with pytest.raises(HessianDataError, match="drawn for .*data.h5"):
        dm.setup()
