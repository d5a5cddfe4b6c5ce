"""HORM LMDB (pickled PyG Data) without torch_geometric installed."""

import importlib.util
import sys

import numpy as np
import pytest

from schnetpack_hessian.convert import ConversionError, convert, open_source
from schnetpack_hessian.data import HessianDataError, read_records
from schnetpack_hessian.layout import square_to_blocks


@pytest.fixture
def horm_file(tmp_path, path_records, write_horm_lmdb):
    path = tmp_path / "sample.lmdb"
    write_horm_lmdb(path, path_records)
    return path


def test_no_torch_geometric_needed(horm_file):
    assert importlib.util.find_spec("torch_geometric") is None
    recs = list(open_source([horm_file]).records)
    assert "torch_geometric" not in sys.modules
    assert len(recs) == 8 and recs[0].hessian.dtype == np.float32


@pytest.mark.parametrize(
    "suffix,precision", [("h5", "float32"), ("h5", "float64"), ("db", "float64")]
)
def test_roundtrip_float32_exact(tmp_path, horm_file, path_records, suffix, precision):
    out = tmp_path / f"horm.{suffix}"
    convert([horm_file], out, precision=precision)
    for r, g in zip(path_records, read_records(out)):
        np.testing.assert_array_equal(g.numbers, r.numbers)
        np.testing.assert_array_equal(g.positions, r.positions.astype(np.float32))
        assert g.energy == np.float32(r.energy)
        np.testing.assert_array_equal(g.forces, r.forces.astype(np.float32))
        np.testing.assert_array_equal(g.hessian, r.hessian.astype(np.float32))
        assert g.kind == "other" and g.reaction == -1


def test_energy_key_ae_and_reaction(horm_file, path_records):
    recs = list(open_source([horm_file], energy_key="ae", reaction_key="rxn").records)
    assert recs[0].energy == np.float32(path_records[0].energy + 5.0)
    assert recs[0].reaction == 7
    with pytest.raises(ConversionError, match="energy_key"):
        open_source([horm_file], energy_key="free_energy")


def test_float32_asymmetry_passes_wrong_layout_fails(
    tmp_path, quadratic_path, write_horm_lmdb
):
    recs = quadratic_path([6, 6, 1, 1, 8], 2, seed=5)
    rng = np.random.default_rng(0)
    for r in recs:  # entries up to ~100 eV/Å², asymmetric by ~3e-3 like HORM
        r.hessian = r.hessian * (100.0 / np.abs(r.hessian).max())
        r.hessian = r.hessian + rng.uniform(-1.5e-3, 1.5e-3, size=r.hessian.shape)
    good = tmp_path / "good.lmdb"
    write_horm_lmdb(good, recs)
    convert([good], tmp_path / "good.h5")
    n = 5
    bad = [r for r in recs]
    # a writer that flattened the (N², 3, 3) block layout instead of the (3N, 3N) matrix
    bad[1].hessian = square_to_blocks(bad[1].hessian).reshape(3 * n, 3 * n)
    path = tmp_path / "bad.lmdb"
    write_horm_lmdb(path, bad)
    with pytest.raises(HessianDataError, match="structure 1: Hessian is not symmetric"):
        convert([path], tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()


def test_wrong_hessian_size(tmp_path, path_records, write_horm_lmdb):
    path_records[2].hessian = np.zeros((3, 3))
    path = tmp_path / "bad.lmdb"
    write_horm_lmdb(path, path_records)
    with pytest.raises(ConversionError, match="structure 2: hessian has 9 values"):
        list(open_source([path]).records)
