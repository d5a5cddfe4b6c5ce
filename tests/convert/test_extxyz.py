"""extxyz with per-frame Hessians, both directions."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
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
