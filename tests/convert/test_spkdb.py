"""SchNetPack ASE-db files with Hessians in spk.atomistic.Response layout."""

import numpy as np
import pytest
from schnetpack.data import ASEAtomsData

from schnetpack_hessian.convert import ConversionError, convert, open_source
from schnetpack_hessian.data import file_units, read_records
from schnetpack_hessian.layout import square_to_blocks


def _spk_db(
    path,
    records,
    units=("kcal/mol", "kcal/mol/Ang", "kcal/mol/Ang/Ang"),
    dtype=np.float64,
):
    ds = ASEAtomsData.create(
        str(path),
        distance_unit="Ang",
        property_unit_dict={
            "energy_U0": units[0],
            "forces": units[1],
            "hessian": units[2],
        },
    )
    ds.add_systems(
        [
            {
                "_atomic_numbers": r.numbers,
                "_positions": r.positions,
                "_cell": np.zeros((3, 3)),
                "_pbc": np.zeros(3, dtype=bool),
                "energy_U0": np.array([r.energy], dtype=dtype),
                "forces": np.asarray(r.forces, dtype=dtype),
                "hessian": np.asarray(square_to_blocks(r.hessian), dtype=dtype),
            }
            for r in records
        ]
    )


def test_response_layout_db_to_h5(tmp_path, path_records):
    src_path = tmp_path / "spk.db"
    _spk_db(src_path, path_records)
    out = tmp_path / "out.h5"
    convert([src_path], out, energy_key="energy_U0")
    assert file_units(out)["hessian"] == "kcal/mol/Ang/Ang"
    for r, g in zip(path_records, read_records(out)):
        np.testing.assert_array_equal(g.hessian, r.hessian)
        np.testing.assert_array_equal(g.forces, r.forces)
        assert g.energy == r.energy


def test_missing_property_and_units(tmp_path, path_records):
    src_path = tmp_path / "spk.db"
    _spk_db(src_path, path_records)
    with pytest.raises(ConversionError, match="property 'energy' not in the file"):
        open_source([src_path])
    bad = tmp_path / "nounit.db"
    _spk_db(bad, path_records, units=("kcal/mol", "kcal/mol/Ang", None))
    with pytest.raises(ConversionError, match="no unit declared for 'hessian'"):
        open_source([bad], energy_key="energy_U0")


def test_big_endian_arrays_convert_to_their_values(tmp_path, path_records, caplog):
    src_path = tmp_path / "big.db"
    _spk_db(src_path, path_records, dtype=">f8")
    out = tmp_path / "out.h5"
    with caplog.at_level("WARNING"):
        convert([src_path], out, energy_key="energy_U0")
    assert "stored in the other byte order" in caplog.text
    for r, g in zip(path_records, read_records(out)):
        assert g.energy == r.energy
        np.testing.assert_array_equal(g.forces, r.forces)
        np.testing.assert_array_equal(g.hessian, r.hessian)
