"""Unit strings: every unit of energy, forces, Hessian or distance has its dimension
checked (expected vs got), wherever it is given."""

import numpy as np
import pytest
from ase.units import Bohr

from schnetpack_hessian import properties as P
from schnetpack_hessian.data import HessianDataError, HessianDataModule, write
from schnetpack_hessian.data.io import open_dataset
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian.data.units import (
    check_dimension,
    complete_units,
    conversion_factor,
    unit_dimension,
)


@pytest.mark.parametrize(
    "unit, dim",
    [
        ("eV", (1, 0)),
        ("kcal/mol", (1, 0)),
        ("kcal/mol/Bohr", (1, -1)),
        ("Hartree/Bohr^2", (1, -2)),
        ("eV/Å²", (1, -2)),
        ("Ang", (0, 1)),
    ],
)
def test_unit_dimension(unit, dim):
    assert unit_dimension(unit) == dim


def test_hessian_unit_with_one_length_is_refused():
    with pytest.raises(HessianDataError, match="expected energy/length\\^2"):
        check_dimension("kcal/mol/Bohr", P.hessian)
    with pytest.raises(HessianDataError, match="different dimensions"):
        conversion_factor("kcal/mol/Bohr", "eV/Ang/Ang")
    with pytest.raises(HessianDataError, match="hessian unit 'kcal/mol/Bohr'"):
        complete_units(
            {"energy": "kcal/mol", "distance": "Bohr", P.hessian: "kcal/mol/Bohr"}
        )
    # the right unit converts: kcal/mol/Bohr^2 -> kcal/mol/Ang^2 is 1/Bohr^2
    factor = conversion_factor("kcal/mol/Bohr^2", "kcal/mol/Ang/Ang")
    assert factor == pytest.approx(1 / Bohr**2)


@pytest.mark.parametrize(
    "unit, quantity, got",
    [
        ("Ang", "energy", "length"),
        ("eV", "distance", "energy"),
        ("eV/Ang/Ang", "forces", "energy/length\\^2"),
        ("eV/fs", "forces", "'fs' is neither"),
    ],
)
def test_wrong_dimension_names_expected_and_got(unit, quantity, got):
    with pytest.raises(HessianDataError, match=got):
        check_dimension(unit, quantity)


@pytest.mark.parametrize("suffix", ["h5", "db"])
def test_dataset_and_datamodule_check_property_units(tmp_path, suffix):
    path = tmp_path / f"data.{suffix}"
    write(path, make_atoms(n_structures=3, seed=0))
    with pytest.raises(HessianDataError, match="expected energy/length\\^2"):
        open_dataset(path, property_units={P.hessian: "kcal/mol/Bohr"})
    with pytest.raises(HessianDataError, match="distance unit 'eV'"):
        open_dataset(path, distance_unit="eV")
    with pytest.raises(HessianDataError, match="HessianDataModule: energy unit 'Ang'"):
        HessianDataModule(path, batch_size=2, property_units={"energy": "Ang"})
    ds = open_dataset(path, property_units={P.hessian: "kcal/mol/Bohr^2"})
    assert np.isfinite(ds[0][P.hessian].numpy()).all()


def test_record_writer_checks_declared_units(tmp_path):
    from schnetpack_hessian.data.io import RecordWriter

    units = {"distance": "Ang", "energy": "eV", "forces": "eV/Ang", P.hessian: "eV/Ang"}
    with pytest.raises(HessianDataError, match="x.h5: hessian unit 'eV/Ang'"):
        RecordWriter(tmp_path / "x.h5", units)


def test_names_taken_without_schnetpack_are_ones_schnetpack_parses():
    """normalize_unit accepts units made of these names without asking SchNetPack;
    each must be one that SchNetPack's parser knows."""
    from schnetpack.units import convert_units

    from schnetpack_hessian.data.units import _FACTOR_DIMENSIONS, _PARSED_NAMES

    assert _PARSED_NAMES <= set(_FACTOR_DIMENSIONS)
    for name in _PARSED_NAMES:
        target = "eV" if _FACTOR_DIMENSIONS[name] == (1, 0) else name
        assert convert_units(name, target) > 0
