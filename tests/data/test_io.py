"""write / iread round trips, metadata, atomic writes, plain-SchNetPack compatibility."""

import numpy as np
import pytest
import torch
from schnetpack.data import ASEAtomsData

from schnetpack_hessian import properties as P
from schnetpack_hessian.data import (
    HDF5AtomsData,
    HessianDataError,
    file_units,
    iread,
    open_dataset,
    write,
)
from schnetpack_hessian.layout import square_to_blocks

from schnetpack_hessian.data.testing import assert_atoms_equal, make_atoms


@pytest.mark.parametrize("suffix", [".db", ".h5"])
def test_write_iread_roundtrip_exact(tmp_path, structures, suffix):
    path = tmp_path / f"data{suffix}"
    write(path, structures, metadata={"source": "test", "level_of_theory": "none"})
    back = list(iread(path))
    assert len(back) == len(structures)
    for a, b in zip(structures, back):
        assert_atoms_equal(a, b)
    md = open_dataset(path).metadata
    assert md["source"] == "test" and md["level_of_theory"] == "none"
    assert md["_property_unit_dict"][P.hessian] == "eV/Ang/Ang"
    assert md["kinds"] == list(P.KINDS)


@pytest.mark.parametrize("suffix", [".db", ".h5"])
def test_dataset_item_layout(tmp_path, structures, suffix):
    path = tmp_path / f"data{suffix}"
    write(path, structures)
    ds = open_dataset(path)
    assert len(ds) == len(structures)
    for i in (0, 1, 3):
        item = ds[i]
        n = len(structures[i])
        assert item[P.hessian].shape == (n * n, 3, 3)
        assert item["energy"].shape == (1,) and item["forces"].shape == (n, 3)
        assert item[P.kind].dtype == torch.int64 and item[P.kind].shape == (1,)
        assert P.KINDS[int(item[P.kind])] == structures[i].info[P.kind]
        h = structures[i].info[P.hessian]
        if h is None:
            assert torch.isnan(item[P.hessian]).all()
        else:
            np.testing.assert_array_equal(item[P.hessian].numpy(), square_to_blocks(h))


def test_db_readable_by_plain_schnetpack(tmp_path, structures):
    path = tmp_path / "data.db"
    write(path, structures)
    ds = ASEAtomsData(str(path), property_units={P.hessian: "kcal/mol/Ang/Ang"})
    assert set(ds.available_properties) >= {"energy", "forces", P.hessian}
    item = ds[0]
    ref = square_to_blocks(structures[0].info[P.hessian]) * 23.060548012069496
    np.testing.assert_allclose(item[P.hessian].numpy(), ref, rtol=1e-12)
    assert ds.metadata["_distance_unit"] == "Ang"
    assert ds.metadata["atomrefs"] == {}


@pytest.mark.parametrize("suffix", [".db", ".h5"])
def test_unit_conversion_on_load(tmp_path, structures, suffix):
    path = tmp_path / f"data{suffix}"
    write(path, structures)
    ds = open_dataset(
        path,
        property_units={"energy": "kcal/mol", P.hessian: "kcal/mol/Ang^2"},
        distance_unit="Bohr",
    )
    item = ds[1]
    kcal = 23.060548012069496
    np.testing.assert_allclose(
        item["energy"].numpy(),
        [structures[1].get_potential_energy() * kcal],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        item[P.hessian].numpy(),
        square_to_blocks(structures[1].info[P.hessian]) * kcal,
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        item["_positions"].numpy(),
        structures[1].positions / 0.5291772105638411,
        rtol=1e-9,
    )
    assert ds.units[P.hessian] == "kcal/mol/Ang/Ang"


@pytest.mark.parametrize("suffix", [".db", ".h5"])
def test_no_overwrite_and_atomic(tmp_path, structures, suffix):
    path = tmp_path / f"data{suffix}"
    write(path, structures[:2])
    with pytest.raises(FileExistsError):
        write(path, structures)
    bad = make_atoms(5)
    bad[3].info[P.hessian] = (
        bad[3].info[P.hessian]
        if bad[3].info[P.hessian] is not None
        else np.zeros((6, 6))
    )
    bad[3].info[P.hessian] = np.full_like(bad[3].info[P.hessian], 1.0)
    bad[3].info[P.hessian][0, 0] = np.nan
    with pytest.raises(HessianDataError, match="structure 3.*partially NaN"):
        write(path, bad, overwrite=True)
    # the old file is untouched and no partial file is left behind
    assert len(list(iread(path))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    write(path, structures, overwrite=True)
    assert len(list(iread(path))) == len(structures)


def test_h5_float32_precision_roundtrip(tmp_path, structures):
    from schnetpack_hessian.data import read_records, write_records, record_from_atoms

    recs = [record_from_atoms(a) for a in structures]
    for r in recs:
        if r.hessian is not None:
            r.hessian = r.hessian.astype(np.float32)
            r.forces = r.forces.astype(np.float32)
    path = tmp_path / "f32.h5"
    write_records(path, recs, precision="float32")
    for r, b in zip(recs, read_records(path)):
        if r.hessian is not None:
            np.testing.assert_array_equal(b.hessian, r.hessian.astype(np.float64))
            np.testing.assert_array_equal(b.forces, r.forces.astype(np.float64))
    assert file_units(path)[P.hessian] == "eV/Ang/Ang"
    assert isinstance(open_dataset(path), HDF5AtomsData)
