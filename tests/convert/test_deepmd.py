"""deepmd-kit npy systems, both directions."""

import numpy as np
import pytest

from schnetpack_hessian.convert import ConversionError, convert, open_source
from schnetpack_hessian.data import read_records


@pytest.fixture
def deepmd_system(tmp_path, quadratic_path):
    """A hand-written system: atoms O H C H in file order (type.raw not sorted),
    set.000 with hessian.npy, set.001 without."""
    recs = quadratic_path([8, 1, 6, 1], 5, seed=4)
    root = tmp_path / "dp" / "water-ish"
    root.mkdir(parents=True)
    (root / "type_map.raw").write_text("H\nC\nO\n")
    (root / "type.raw").write_text("2\n0\n1\n0\n")
    (root / "nopbc").touch()
    for name, frames, with_h in (
        ("set.000", recs[:3], True),
        ("set.001", recs[3:], False),
    ):
        s = root / name
        s.mkdir()
        np.save(s / "coord.npy", np.stack([r.positions.ravel() for r in frames]))
        np.save(s / "energy.npy", np.array([r.energy for r in frames]))
        np.save(s / "force.npy", np.stack([r.forces.ravel() for r in frames]))
        if with_h:
            np.save(s / "hessian.npy", np.stack([r.hessian.ravel() for r in frames]))
    return root.parent, recs


def test_deepmd_to_h5_to_deepmd_exact(tmp_path, deepmd_system):
    folder, recs = deepmd_system
    convert([folder], tmp_path / "dp.h5")
    got = list(read_records(tmp_path / "dp.h5"))
    assert [g.hessian is None for g in got] == [False] * 3 + [True] * 2
    for r, g in zip(recs, got):
        np.testing.assert_array_equal(g.numbers, [8, 1, 6, 1])
        np.testing.assert_array_equal(g.positions, r.positions)
        np.testing.assert_array_equal(g.forces, r.forces)
        assert g.energy == r.energy
        if g.hessian is not None:
            np.testing.assert_array_equal(g.hessian, r.hessian)
    out = tmp_path / "back"
    convert([tmp_path / "dp.h5"], out, out_format="deepmd")
    sets = sorted(out.glob("sys-*/set.*"))
    assert [(s / "hessian.npy").exists() for s in sets] == [True, False]
    again = list(open_source([out], "deepmd").records)
    for g, a in zip(got, again):
        np.testing.assert_array_equal(a.positions, g.positions)
        np.testing.assert_array_equal(a.forces, g.forces)
        assert a.energy == g.energy and a.kind == g.kind
        assert (a.hessian is None) == (g.hessian is None)
        if a.hessian is not None:
            np.testing.assert_array_equal(a.hessian, g.hessian)


def test_deepmd_writer_converts_units(tmp_path, deepmd_system):
    folder, recs = deepmd_system
    out = tmp_path / "kcal"
    src = open_source([folder])
    from schnetpack_hessian.convert import deepmd
    from schnetpack_hessian.data import convert_record, derived_units

    kcal = derived_units("kcal/mol", "Ang")
    deepmd.write(out, (convert_record(r, src.units, kcal) for r in src.records), kcal)
    back = next(open_source([out]).records)
    np.testing.assert_allclose(back.hessian, recs[0].hessian, rtol=1e-13)


def test_deepmd_bad_shapes(tmp_path, deepmd_system):
    folder, _ = deepmd_system
    np.save(folder / "water-ish" / "set.000" / "hessian.npy", np.zeros((3, 10)))
    with pytest.raises(
        ConversionError, match=r"hessian.npy has shape \(3, 10\), expected \(3, 144\)"
    ):
        list(open_source([folder]).records)
    (folder / "water-ish" / "type_map.raw").unlink()
    with pytest.raises(ConversionError, match="type_map.raw missing"):
        list(open_source([folder], "deepmd").records)


def test_written_deepmd_reads_back_with_numpy_alone(tmp_path, deepmd_system):
    """Checked by an independent reader: np.load of the written arrays, with the
    kcal/mol → eV factor applied by hand, and the type map and type list as text."""
    from ase import units as ase_units

    from schnetpack_hessian.convert import deepmd
    from schnetpack_hessian.data import convert_record, derived_units

    folder, recs = deepmd_system  # eV, Å
    kcal = derived_units("kcal/mol", "Ang")
    to_kcal = ase_units.mol / ase_units.kcal
    src = open_source([folder])
    records = [convert_record(r, src.units, kcal) for r in src.records]
    out = tmp_path / "written"
    deepmd.write(out, records, kcal)
    (system,) = out.glob("sys-*")
    type_map = (system / "type_map.raw").read_text().split()
    types = [int(t) for t in (system / "type.raw").read_text().split()]
    assert [type_map[t] for t in types] == ["O", "H", "C", "H"]  # file order kept
    with_h = system / "set.000"
    assert (with_h / "hessian.npy").exists()
    energy = np.load(with_h / "energy.npy")
    force = np.load(with_h / "force.npy")
    coord = np.load(with_h / "coord.npy")
    hessian = np.load(with_h / "hessian.npy")
    assert hessian.shape == (3, 9 * 16)
    for k, rec in enumerate(records[:3]):
        np.testing.assert_allclose(energy[k], rec.energy / to_kcal, rtol=1e-13)
        np.testing.assert_allclose(force[k], rec.forces.ravel() / to_kcal, rtol=1e-13)
        np.testing.assert_allclose(coord[k], rec.positions.ravel(), rtol=1e-13)
        np.testing.assert_allclose(
            hessian[k], rec.hessian.ravel() / to_kcal, rtol=1e-13
        )
        np.testing.assert_allclose(hessian[k], recs[k].hessian.ravel(), rtol=1e-12)


def test_reaction_ids_shared_within_an_input_folder(tmp_path):
    """The systems of one deepmd folder share its ids; a second folder is shifted."""
    from schnetpack_hessian import properties as P
    from schnetpack_hessian.data import iread, write
    from schnetpack_hessian.data.testing import make_atoms

    atoms = make_atoms(n_structures=6, seed=0, n_reactions=3, sizes=(2, 3))
    write(tmp_path / "src.h5", atoms)
    folders = []
    for name in ("a", "b"):
        folders.append(tmp_path / name)
        convert([tmp_path / "src.h5"], folders[-1], out_format="deepmd")
    convert(folders, tmp_path / "both.h5")
    got = list(iread(tmp_path / "both.h5"))
    first = {x.info[P.reaction] for x in got[:6]}
    second = {x.info[P.reaction] for x in got[6:]}
    assert first == {x.info[P.reaction] for x in atoms}
    assert len(second) == len(first) and not first & second
