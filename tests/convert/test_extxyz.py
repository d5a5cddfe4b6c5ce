"""extxyz with per-frame Hessians, both directions."""

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols
from ase.io import write as ase_write

from schnetpack_hessian.convert import ConversionError, convert, open_source
from schnetpack_hessian.data import HessianDataError, read_records


def _ase_frames(records, per_atom=False):
    frames = []
    for r in records:
        a = Atoms(numbers=r.numbers, positions=r.positions)
        a.calc = SinglePointCalculator(a, energy=r.energy, forces=r.forces)
        n = len(a)
        if per_atom:
            a.arrays["hessian"] = r.hessian.reshape(n, 9 * n)
        else:
            a.info["hessian"] = r.hessian.ravel()
        a.info["kind"] = r.kind
        a.info["reaction"] = r.reaction
        frames.append(a)
    return frames


def test_ase_written_info_hessian(tmp_path, path_records):
    path = tmp_path / "ase.xyz"
    ase_write(path, _ase_frames(path_records), format="extxyz")
    with pytest.raises(ConversionError, match="declare them with --energy-unit"):
        open_source([path])
    out = tmp_path / "x.h5"
    convert([path], out, energy_unit="eV", distance_unit="Ang")
    for r, g in zip(path_records, read_records(out)):
        np.testing.assert_array_equal(g.hessian, r.hessian)  # info values: full repr
        np.testing.assert_allclose(g.forces, r.forces, atol=1e-8)  # ASE prints %16.8f
        assert g.kind == "irc" and g.reaction == 0


def test_ase_written_per_atom_hessian(tmp_path, path_records):
    path = tmp_path / "ase_pa.extxyz"
    ase_write(path, _ase_frames(path_records, per_atom=True), format="extxyz")
    recs = list(open_source([path], energy_unit="eV", distance_unit="Ang").records)
    np.testing.assert_allclose(recs[2].hessian, path_records[2].hessian, atol=1e-8)


@pytest.mark.parametrize("per_atom", [False, True])
def test_roundtrip_exact_via_training_file(tmp_path, path_records, per_atom):
    from schnetpack_hessian.convert import extxyz
    from schnetpack_hessian.data import derived_units, write_records

    units = derived_units("kcal/mol", "Ang")
    path_records[1].hessian = None
    write_records(tmp_path / "t.db", path_records, units)
    out = tmp_path / "t.xyz"
    extxyz.write(out, read_records(tmp_path / "t.db"), units, per_atom=per_atom)
    src = open_source([out])  # units come from the file
    assert src.units["hessian"] == "kcal/mol/Ang/Ang"
    for r, g in zip(path_records, src.records):
        np.testing.assert_array_equal(g.positions, r.positions)
        np.testing.assert_array_equal(g.forces, r.forces)
        assert g.energy == r.energy
        assert (g.hessian is None) == (r.hessian is None)
        if r.hessian is not None:
            np.testing.assert_array_equal(g.hessian, r.hessian)
    with pytest.raises(ConversionError, match="file declares energy in kcal/mol"):
        open_source([out], energy_unit="eV")


def test_bad_hessian_shape(tmp_path, path_records):
    frames = _ase_frames(path_records[:2])
    frames[1].info["hessian"] = np.arange(10.0)
    path = tmp_path / "bad.xyz"
    ase_write(path, frames, format="extxyz")
    with pytest.raises(
        HessianDataError, match="structure 1: Hessian has shape \\(10,\\)"
    ):
        list(open_source([path], energy_unit="eV", distance_unit="Ang").records)


def test_reaction_names_survive_extxyz_export(tmp_path, path_records):
    from schnetpack_hessian.data import derived_units, iread
    from schnetpack_hessian.convert.extxyz import write

    names = ["HCN -> HNC (1,2-H shift)", 'say "hi"', "HCN -> HNC (1,2-H shift)"]
    for rec, name in zip(path_records, names):
        rec.reaction = name
    src = tmp_path / "named.xyz"
    write(src, path_records[:3], derived_units("eV", "Ang"))
    first = tmp_path / "a.h5"
    convert([src], first)
    exported = tmp_path / "export.xyz"
    convert([first], exported)
    assert 'reaction_name="say \\"hi\\""' in exported.read_text()
    again = tmp_path / "b.db"
    convert([exported], again)
    for path in (first, again):
        atoms = list(iread(path))
        assert [a.info["reaction_name"] for a in atoms] == names
        assert [a.info["reaction"] for a in atoms] == [0, 1, 0]


@pytest.mark.parametrize("per_atom", [False, True])
def test_written_extxyz_reads_back_with_ase_alone(tmp_path, path_records, per_atom):
    """Checked by an independent reader: ase.io.read sees the energy, forces, labels,
    units and the Hessian (flattened in the comment line or as a per-atom array)."""
    from ase.io import read as ase_read

    from schnetpack_hessian.convert import extxyz
    from schnetpack_hessian.data import derived_units

    units = derived_units("kcal/mol", "Ang")
    out = tmp_path / "frames.xyz"
    extxyz.write(out, path_records, units, per_atom=per_atom)
    frames = ase_read(out, index=":", format="extxyz")
    assert len(frames) == len(path_records)
    for atoms, rec in zip(frames, path_records):
        n = len(atoms)
        np.testing.assert_array_equal(atoms.numbers, rec.numbers)
        np.testing.assert_allclose(atoms.positions, rec.positions, rtol=1e-12)
        np.testing.assert_allclose(atoms.get_potential_energy(), rec.energy, rtol=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), rec.forces, rtol=1e-12)
        if per_atom:
            hessian = atoms.arrays["hessian"].reshape(3 * n, 3 * n)
        else:
            hessian = np.asarray(atoms.info["hessian"]).reshape(3 * n, 3 * n)
        np.testing.assert_allclose(hessian, rec.hessian, rtol=1e-12)
        assert atoms.info["energy_unit"] == "kcal/mol"
        assert atoms.info["kind"] == rec.kind and atoms.info["reaction"] == rec.reaction


def _f(x) -> str:
    return repr(float(x))


def _frame_text(record, info: str) -> str:
    """One extxyz frame of ``record`` with ``info`` in the comment line."""
    lines = [f"{record.n_atoms}", f"Properties=species:S:1:pos:R:3:forces:R:3 {info}"]
    for z, x, f in zip(record.numbers, record.positions, record.forces):
        lines.append(" ".join([chemical_symbols[z], *map(_f, x), *map(_f, f)]))
    return "\n".join(lines) + "\n"


def test_units_are_read_per_frame(tmp_path, path_records):
    """A later frame in kcal/mol is converted, not stored as eV."""
    a, b = path_records[:2]
    path = tmp_path / "mixed.xyz"
    path.write_text(
        _frame_text(a, f"energy={_f(a.energy)} energy_unit=eV distance_unit=Ang")
        + _frame_text(
            b, f"energy={_f(b.energy)} energy_unit=kcal/mol distance_unit=Ang"
        )
    )
    out = tmp_path / "mixed.h5"
    convert([path], out)
    got = list(read_records(out))
    assert got[0].energy == a.energy
    kcal = units.kcal / units.mol
    assert got[1].energy == pytest.approx(b.energy * kcal)
    np.testing.assert_allclose(got[1].forces, b.forces * kcal)


@pytest.mark.parametrize(
    "info, key",
    [
        ("energy=T", "energy"),
        ("energy=F", "energy"),
        ('energy=1.0 hessian="a b c"', "hessian"),
    ],
)
def test_non_numeric_values_are_errors(tmp_path, path_records, info, key):
    path = tmp_path / "bad.xyz"
    rec = path_records[0]
    path.write_text(
        _frame_text(rec, f"energy={_f(rec.energy)}") + _frame_text(rec, info)
    )
    with pytest.raises(ConversionError, match=f"bad.xyz: structure 1: {key} is"):
        convert([path], tmp_path / "x.h5", energy_unit="eV", distance_unit="Ang")


def test_unit_options_and_declarations_are_checked_for_dimension(
    tmp_path, path_records
):
    path = tmp_path / "ase.xyz"
    ase_write(path, _ase_frames(path_records), format="extxyz")
    with pytest.raises(
        HessianDataError,
        match="ase.xyz: option energy_unit \\(--energy-unit\\): energy unit 'Ang' has dimension length",
    ):
        open_source([path], energy_unit="Ang", distance_unit="Ang")
    declared = tmp_path / "declared.xyz"
    rec = path_records[0]
    declared.write_text(
        _frame_text(rec, f"energy={_f(rec.energy)} energy_unit=Bohr distance_unit=Ang")
    )
    with pytest.raises(
        HessianDataError, match="declared.xyz: the file declares: energy"
    ):
        open_source([declared])


def test_frame_declaring_energy_only_keeps_the_first_frames_distance(
    tmp_path, path_records
):
    a, b = path_records[:2]
    path = tmp_path / "partial.xyz"
    path.write_text(
        _frame_text(a, f"energy={_f(a.energy)} energy_unit=eV distance_unit=Ang")
        + _frame_text(b, f"energy={_f(b.energy)} energy_unit=kcal/mol")
    )
    got = list(open_source([path]).records)
    np.testing.assert_array_equal(got[1].positions, b.positions)
    assert got[1].energy == pytest.approx(b.energy * units.kcal / units.mol)


def test_integer_reaction_ids_of_two_files_are_kept_apart(tmp_path, path_records):
    paths = []
    for name in ("a", "b"):
        paths.append(tmp_path / f"{name}.xyz")
        ase_write(paths[-1], _ase_frames(path_records[:2]), format="extxyz")
    out = tmp_path / "ab.h5"
    convert(paths, out, energy_unit="eV", distance_unit="Ang")
    assert [r.reaction for r in read_records(out)] == [0, 0, 1, 1]
