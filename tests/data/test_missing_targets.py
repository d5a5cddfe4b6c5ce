"""Energy, forces and Hessian may each be missing per structure: ``None`` in memory,
all NaN in ``.h5`` and ``.db``, absent from the calculator's results in ``iread``."""

import h5py
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect

from schnetpack_hessian import properties as P
from schnetpack_hessian.convert import ConversionError, check, convert
from schnetpack_hessian.data import HessianDataError, iread, open_dataset, write
from schnetpack_hessian.data.physics import PhysicsCheck, residuals
from schnetpack_hessian.data.record import record_from_atoms, validate_record
from schnetpack_hessian.data.testing import assert_atoms_equal, make_atoms

EV_ANG = {
    "distance": "Ang",
    "energy": "eV",
    "forces": "eV/Ang",
    "hessian": "eV/Ang/Ang",
}


def _subsets():
    """Four structures: all targets, energy only, forces only, Hessian only."""
    atoms = make_atoms(4, missing_every=0)
    e1 = atoms[1].get_potential_energy()
    atoms[1].calc = SinglePointCalculator(atoms[1], energy=e1)
    atoms[1].info[P.hessian] = None
    f2 = atoms[2].get_forces()
    atoms[2].calc = SinglePointCalculator(atoms[2], forces=f2)
    atoms[2].info[P.hessian] = None
    atoms[3].calc = None
    return atoms


@pytest.mark.parametrize("suffix", [".h5", ".db"])
def test_any_subset_of_targets_round_trips(tmp_path, suffix):
    path = tmp_path / f"mixed{suffix}"
    atoms = _subsets()
    write(path, atoms)
    back = list(iread(path))
    for a, b in zip(atoms, back):
        assert_atoms_equal(a, b)
    assert "energy" not in back[2].calc.results and "forces" in back[2].calc.results
    assert "forces" not in back[1].calc.results and back[1].info[P.hessian] is None
    assert back[3].calc.results == {} and back[3].info[P.hessian] is not None


@pytest.mark.parametrize("suffix", [".h5", ".db"])
def test_missing_targets_are_stored_and_loaded_as_nan(tmp_path, suffix):
    path = tmp_path / f"mixed{suffix}"
    atoms = _subsets()
    write(path, atoms)
    if suffix == ".h5":
        with h5py.File(path, "r") as f:
            energy = f["properties/energy"][:, 0]
            forces = f["properties/forces"][()]
            starts = np.concatenate([[0], np.cumsum(f["n_atoms"][()])])
        assert np.isnan(energy[[2, 3]]).all() and np.isfinite(energy[[0, 1]]).all()
        rows = [np.isnan(forces[starts[i] : starts[i + 1]]).all() for i in range(4)]
        assert rows == [False, True, False, True]
    else:
        with connect(path) as conn:
            data = [row.data for row in conn.select(sort="id")]
        assert np.isnan(data[2]["energy"]).all() and np.isnan(data[1]["forces"]).all()
    ds = open_dataset(path)
    items = [ds[i] for i in range(4)]
    assert (
        torch.isnan(items[2]["energy"]).all() and torch.isnan(items[3]["energy"]).all()
    )
    assert (
        torch.isnan(items[1]["forces"]).all() and torch.isnan(items[3]["forces"]).all()
    )
    assert torch.isfinite(items[0]["forces"]).all()
    assert items[3]["forces"].shape == (len(atoms[3]), 3)


def test_nan_from_a_reader_means_missing_and_a_structure_needs_one_target():
    (atoms,) = make_atoms(1, missing_every=0)
    record = record_from_atoms(atoms)
    record.energy = float("nan")
    record.forces = np.full_like(record.forces, np.nan)
    checked, _ = validate_record(record)
    assert checked.energy is None and checked.forces is None
    record.hessian = None
    with pytest.raises(
        HessianDataError, match="x.h5, structure 5: the structure has no"
    ):
        validate_record(record, "x.h5", 5)


def test_without_forces_only_the_translational_rule_is_checked():
    (atoms,) = make_atoms(1, sizes=(5,), missing_every=0)
    record, _ = validate_record(record_from_atoms(atoms))
    record.forces = None
    trans, rot, _ = residuals(record, EV_ANG)
    assert rot == 0.0 and trans < 1e-8
    PhysicsCheck()(record, EV_ANG)
    broken = np.array(record.hessian)
    broken[0, :] += 5.0
    broken[:, 0] += 5.0
    record.hessian = broken
    with pytest.raises(HessianDataError, match="translational sum rule"):
        PhysicsCheck()(record, EV_ANG)


def test_check_and_export_of_a_file_with_missing_targets(tmp_path):
    path = tmp_path / "mixed.h5"
    write(path, _subsets())
    report = check([path])
    assert report["structures"] == 4 and report["hessians"] == 2
    with pytest.raises(
        ConversionError, match="mixed.h5: structure 1: has no forces; extxyz output"
    ):
        convert([path], tmp_path / "out.xyz")
    assert not (tmp_path / "out.xyz").exists()
