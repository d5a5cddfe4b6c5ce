"""Quantities convert by their own dimension; schemas declare every key's dimension."""

import copy
import json
import math
import pickle

import numpy as np
import pytest
from ase import units

from schnetpack_hessian.quantities import (
    UNIT_SYSTEMS,
    Dimension,
    Quantity,
    Schema,
    dimensions_of,
    in_units,
)

KCAL_PER_EV = 1.0 / (units.kcal / units.mol)


@pytest.mark.parametrize(
    "dimension, factor",
    [
        (Dimension.ENERGY, KCAL_PER_EV),
        (Dimension.FORCE, KCAL_PER_EV),
        (Dimension.HESSIAN, KCAL_PER_EV),
        (Dimension.WAVENUMBER, 1.0),
        (Dimension.DIMENSIONLESS, 1.0),
    ],
)
def test_a_quantity_converts_by_its_own_dimension(dimension, factor):
    q = Quantity(0.5, dimension)
    assert q.to("kcal/mol") == pytest.approx(0.5 * factor, rel=1e-15)
    assert q.to("eV") == 0.5 and type(q.to("eV")) is float


def test_every_unit_system_has_every_dimension():
    for table in UNIT_SYSTEMS.values():
        assert set(table) == set(Dimension)
    assert Dimension.HESSIAN.label("kcal/mol") == "kcal/mol/Ang^2"
    assert Dimension.HESSIAN.unit("kcal/mol").symbol == "kcal/mol/Å²"
    with pytest.raises(KeyError, match="unknown unit system 'Hartree'"):
        Dimension.ENERGY.factor("Hartree")


def test_a_quantity_is_a_float_for_numpy_json_csv_and_pickle():
    q = Quantity(1.25, "force")
    assert q.dimension is Dimension.FORCE and q == 1.25 and isinstance(q, float)
    assert json.loads(json.dumps({"q": q})) == {"q": 1.25}
    assert f"{q:.6g}" == "1.25" and np.asarray([q, q]).dtype == np.float64
    for again in (pickle.loads(pickle.dumps(q)), copy.deepcopy(q)):
        assert again == q and again.dimension is Dimension.FORCE
    assert type(q * 2) is float  # derived numbers are typed where declared
    assert math.isnan(Quantity(float("nan"), Dimension.ENERGY))


def test_in_units_converts_quantities_in_nested_mappings_and_lists_only():
    values = {
        "e": Quantity(1.0, Dimension.ENERGY),
        "rows": [{"h": Quantity(2.0, Dimension.HESSIAN), "n": 3}],
        "rate": 0.5,
        "name": "x",
    }
    got = in_units(values, "kcal/mol")
    assert got["e"] == pytest.approx(KCAL_PER_EV)
    assert got["rows"][0] == {"h": pytest.approx(2 * KCAL_PER_EV), "n": 3}
    assert got["rate"] == 0.5 and got["name"] == "x"


def test_a_schema_types_declared_keys_and_refuses_undeclared_ones():
    row = Schema("row", {"index": None, "energy_error": Dimension.ENERGY})
    record = row(index=3, energy_error=np.float64(0.1))
    assert record["index"] == 3 and type(record["index"]) is int
    assert record["energy_error"].dimension is Dimension.ENERGY
    with pytest.raises(KeyError, match="row: undeclared key 'forces'"):
        row(forces=1.0)
    with pytest.raises(TypeError, match="declared 'energy'"):
        row(energy_error=Quantity(1.0, Dimension.FORCE))
    with pytest.raises(TypeError, match="declared None"):
        row(index=Quantity(1.0, Dimension.FORCE))


def test_dimensions_of_merges_schemas_in_order_and_refuses_conflicts():
    a = Schema("a", {"n": None, "x": Dimension.ENERGY, "y": Dimension.FORCE})
    b = Schema("b", {"y": Dimension.FORCE, "z": Dimension.DIMENSIONLESS})
    assert list(dimensions_of(a, b)) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="'x' is 'energy'"):
        dimensions_of(a, Schema("c", {"x": Dimension.HESSIAN}))
