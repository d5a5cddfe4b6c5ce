"""Validation and unit handling: every bad input raises with file, index and problem."""

import numpy as np
import pytest

from schnetpack_hessian import properties as P
from schnetpack_hessian.data import (
    ASE_UNITS as EV_ANG,
    HessianDataError,
    HessianRecord,
    check_hessian,
    conversion_factor,
    hessian_asymmetry,
    normalize_unit,
    record_from_atoms,
    validate_record,
    write,
)
from schnetpack_hessian.data.testing import make_atoms, random_hessian
from schnetpack_hessian.layout import blocks_to_square, square_to_blocks


@pytest.mark.parametrize(
    "unit,expected",
    [
        ("eV/Ang/Ang", "eV/Ang/Ang"),
        ("kcal/mol/Ang^2", "kcal/mol/Ang/Ang"),
        ("eV/Å²", "eV/Ang/Ang"),
        ("Hartree/Bohr**2", "Hartree/Bohr/Bohr"),
        ("Ha/A", "Hartree/Ang"),
    ],
)
def test_normalize_unit(unit, expected):
    assert normalize_unit(unit) == expected


def test_conversion_factors():
    assert conversion_factor("Hartree/Bohr/Bohr", "eV/Ang/Ang") == pytest.approx(
        27.211386245988 / 0.529177210903**2, rel=1e-6
    )
    assert conversion_factor("eV/Ang/Ang", "kcal/mol/Ang^2") == pytest.approx(
        23.0605, rel=1e-4
    )
    with pytest.raises(HessianDataError, match="unknown unit 'furlong'"):
        normalize_unit("furlong")


def test_symmetry_tolerance_real_noise_vs_wrong_reshape():
    rng = np.random.default_rng(1)
    for n in (2, 5, 15):
        h = random_hessian(rng, n)
        h *= 100.0 / np.abs(h).max()
        noisy = h + rng.uniform(
            -1.5e-3, 1.5e-3, size=h.shape
        )  # HORM-like float32 asymmetry
        assert check_hessian(noisy, n)[1] < 1e-4
        flat_blocks = square_to_blocks(h).reshape(3 * n, 3 * n)
        misread = blocks_to_square(h.reshape(n * n, 3, 3))
        for wrong in (flat_blocks, misread):
            assert hessian_asymmetry(wrong) > 0.1
            with pytest.raises(
                HessianDataError, match="file.h5, structure 3: Hessian is not sym"
            ):
                check_hessian(wrong, n, "file.h5", 3)


def test_symmetrize_fixes_small_asymmetry():
    h = random_hessian(np.random.default_rng(0), 3)
    h[0, 1] += 1e-3
    fixed, asym = check_hessian(h, 3, fix_symmetry=True)
    assert asym > 0 and np.array_equal(fixed, fixed.T)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (
            lambda a: a.info.__setitem__(P.hessian, np.zeros((5, 5))),
            "Hessian has shape",
        ),
        (lambda a: a.info[P.hessian].__setitem__((0, 1), np.nan), "partially NaN"),
        (lambda a: a.info[P.hessian].__setitem__((0, 0), np.inf), "infinite"),
        (
            lambda a: a.calc.results.__setitem__("forces", np.zeros((1, 3))),
            "forces has shape",
        ),
        (lambda a: a.calc.results.__setitem__("energy", np.inf), "energy contains NaN"),
        (
            lambda a: a.calc.results["forces"].__setitem__((0, 1), np.nan),
            "forces is partially NaN",
        ),
        (lambda a: a.numbers.__setitem__(0, 0), "unknown elements"),
        (lambda a: a.info.__setitem__(P.kind, "minimum"), "unknown kind 'minimum'"),
    ],
)
def test_bad_structures_raise(tmp_path, mutate, message):
    atoms = make_atoms(3, missing_every=0)
    mutate(atoms[2])
    with pytest.raises(HessianDataError, match=f"bad.h5, structure 2: .*{message}"):
        write(tmp_path / "bad.h5", atoms)
    assert not (tmp_path / "bad.h5").exists()


def test_missing_hessian_is_all_nan(tmp_path):
    atoms = make_atoms(2, missing_every=0)
    atoms[0].info[P.hessian] = np.full((6, 6), np.nan)
    rec, _ = validate_record(record_from_atoms(atoms[0]))
    assert rec.hessian is None
    with pytest.raises(
        HessianDataError, match="x.db, structure 1: Atoms has no energy"
    ):
        atoms[1].calc = None
        atoms[1].info[P.hessian] = None
        record_from_atoms(atoms[1], "x.db", 1)


def test_complete_units_fills_only_what_is_missing():
    from schnetpack_hessian.data.units import complete_units

    got = complete_units({"distance": "Å", "energy": "kcal/mol", "forces": "eV/Bohr"})
    assert got == {
        "distance": "Ang",
        "energy": "kcal/mol",
        "forces": "eV/Bohr",
        "hessian": "kcal/mol/Ang/Ang",
    }
    with pytest.raises(HessianDataError, match="no energy unit declared"):
        complete_units({"distance": "Ang", "energy": None})


def _water_record(**changes):
    """H2O (Å, eV) with a consistent energy, forces and Hessian, as a record."""
    (atoms,) = make_atoms(1, sizes=(3,), missing_every=0)
    atoms.numbers[:] = [8, 1, 1]
    atoms.positions[:] = [[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]]
    record = record_from_atoms(atoms)
    for key, value in changes.items():
        setattr(record, key, value)
    return record


@pytest.mark.parametrize("gap", [0.0, 0.05])
def test_coincident_atoms_named_with_their_distance(gap):
    positions = _water_record().positions.copy()
    positions[2] = positions[1] + [gap, 0.0, 0.0]
    with pytest.raises(
        HessianDataError,
        match=rf"w.h5, structure 4: atoms 1 and 2 are {gap:.3g} Ang apart, closer "
        r"than 0.1 Ang",
    ):
        validate_record(_water_record(positions=positions), "w.h5", 4)


def test_distances_are_checked_in_the_declared_unit():
    bohr = conversion_factor("Ang", "Bohr")
    record = _water_record()
    record.positions = record.positions * bohr
    validate_record(record, units=dict(EV_ANG, distance="Bohr"))
    with pytest.raises(HessianDataError, match="atoms 1 and 2 are 0.0794 Ang apart"):
        record.positions[2] = record.positions[1] + [0.15, 0.0, 0.0]
        validate_record(record, units=dict(EV_ANG, distance="Bohr"))


def test_collapsed_geometry_refused():
    record = _water_record()
    record.positions = 1e-3 * record.positions
    with pytest.raises(
        HessianDataError,
        match="structure 0: degenerate geometry: all 3 atoms lie within 0.00152 Ang",
    ):
        validate_record(record, "w.h5", 0)


@pytest.mark.parametrize(
    "energy,message",
    [
        (np.inf, r"energy contains NaN or infinite values \(1 of 1; first inf"),
        (-3.1e5 * 3, r"energy -930000 eV is 3.1e\+05 eV per atom in magnitude"),
    ],
)
def test_non_finite_or_absurd_energy_named(energy, message):
    with pytest.raises(HessianDataError, match=f"w.h5, structure 1: {message}"):
        validate_record(_water_record(energy=energy), "w.h5", 1)


def test_real_total_energies_pass_and_hartree_is_converted():
    validate_record(_water_record(energy=-2100.0 * 3))  # DFT C/N/O: ~-1000..-2100 eV
    hartree = dict(EV_ANG, energy="Hartree", forces="Hartree/Ang")
    hartree[P.hessian] = "Hartree/Ang/Ang"
    record = _water_record(energy=-76.4)
    record.forces = record.forces / 27.211386
    record.hessian = record.hessian / 27.211386
    validate_record(record, units=hartree)
    with pytest.raises(HessianDataError, match="per atom"):
        validate_record(_water_record(energy=-2.0e4 * 3), units=hartree)


def test_one_atom_structure_needs_a_zero_hessian():
    atom = HessianRecord(
        numbers=np.array([6]),
        positions=np.zeros((1, 3)),
        energy=-1027.0,
        forces=np.zeros((1, 3)),
        hessian=np.zeros((3, 3)),
    )
    validate_record(atom)
    atom.hessian = 50.0 * np.eye(3)
    with pytest.raises(
        HessianDataError,
        match=r"c.h5, structure 7: one-atom structure with a nonzero Hessian "
        r"\(max\|H\| = 50 eV/Ang/Ang",
    ):
        validate_record(atom, "c.h5", 7)
