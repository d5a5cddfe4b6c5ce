"""Bad inputs never pass silently: one fixture per failure kind, each message naming
the input file, the structure and the problem, and no output or partial file left."""

import pickle

import h5py
import numpy as np
import pytest

from schnetpack_hessian.cli.convert import main
from schnetpack_hessian.convert import check, convert, open_source
from schnetpack_hessian.convert.deepmd import write as write_deepmd
from schnetpack_hessian.convert.extxyz import write as write_extxyz
from schnetpack_hessian.convert.orca import write_hess
from schnetpack_hessian.data import HessianDataError, HessianDataModule
from schnetpack_hessian.data import derived_units, iread
from schnetpack_hessian.data import file_metadata, read_records, write_records
from schnetpack_hessian.data.record import HessianRecord

EV = derived_units("eV", "Ang")


def assert_fails(tmp_path, inputs, parts, fmt=None, **options):
    """Conversion and --check both fail naming every part; nothing is left behind."""
    out = tmp_path / "out.h5"
    for run in (
        lambda: convert(inputs, out, fmt=fmt, **options),
        lambda: check(inputs, fmt=fmt, **options),
    ):
        with pytest.raises(HessianDataError) as info:
            run()
        for part in parts:
            assert part in str(info.value), (part, str(info.value))
    assert not [p for p in tmp_path.iterdir() if "out.h5" in p.name]
    return str(info.value)


@pytest.fixture
def xyz_lines(tmp_path, path_records):
    path = tmp_path / "frames.xyz"
    write_extxyz(path, path_records[:3], EV)
    return path, path.read_text().splitlines()


def _frame_line(lines, frame, atom):
    """Index of the line of ``atom`` in ``frame`` (4 atoms, 2 header lines each)."""
    return frame * 6 + 2 + atom


def test_extxyz_truncated_frame(tmp_path, xyz_lines):
    path, lines = xyz_lines
    path.write_text("\n".join(lines[:-2]) + "\n")
    assert_fails(tmp_path, [path], [str(path), "structure 2", "Frame has 2 atoms"])


def test_extxyz_missing_columns(tmp_path, xyz_lines):
    path, lines = xyz_lines
    i = _frame_line(lines, 1, 2)
    lines[i] = " ".join(lines[i].split()[:5])
    path.write_text("\n".join(lines) + "\n")
    assert_fails(tmp_path, [path], [str(path), "structure 1", "could not assign"])


def test_extxyz_unknown_element(tmp_path, xyz_lines):
    path, lines = xyz_lines
    i = _frame_line(lines, 1, 0)
    lines[i] = "Q" + lines[i][1:]
    path.write_text("\n".join(lines) + "\n")
    assert_fails(tmp_path, [path], [str(path), "structure 1", "unknown element"])


def test_index_counts_within_each_input(tmp_path, path_records):
    good, bad = tmp_path / "a.xyz", tmp_path / "b.xyz"
    write_extxyz(good, path_records[:3], EV)
    write_extxyz(bad, path_records[3:6], EV)
    lines = bad.read_text().splitlines()
    lines[_frame_line(lines, 1, 0)] = "Q" + lines[_frame_line(lines, 1, 0)][1:]
    bad.write_text("\n".join(lines) + "\n")
    message = assert_fails(tmp_path, [good, bad], [f"{bad}: structure 1"])
    assert f"{good}" not in message


@pytest.fixture
def orca_hess(tmp_path, path_records):
    rec = path_records[0]
    path = tmp_path / "mol.hess"
    write_hess(
        path,
        rec.numbers,
        rec.positions,
        rec.hessian,
        energy=rec.energy,
        gradient=-rec.forces,
    )
    return path


def test_orca_missing_rows(tmp_path, orca_hess):
    lines = orca_hess.read_text().splitlines()
    start = lines.index("$hessian")
    del lines[start + 5 : start + 7]  # two rows of the first column block
    orca_hess.write_text("\n".join(lines))
    assert_fails(tmp_path, [orca_hess], [str(orca_hess), "structure 0", "$hessian"])


def test_orca_non_numeric_entry(tmp_path, orca_hess):
    text = orca_hess.read_text().splitlines()
    start = text.index("$hessian")
    parts = text[start + 4].split()
    parts[2] = "abc"
    text[start + 4] = " ".join(parts)
    orca_hess.write_text("\n".join(text))
    assert_fails(
        tmp_path, [orca_hess], [str(orca_hess), "structure 0", "non-numeric entry"]
    )


def test_deepmd_hessian_wrong_frame_count(tmp_path, path_records):
    folder = tmp_path / "dp"
    write_deepmd(folder, path_records[:4], EV)
    h = folder / "sys-0000" / "set.000" / "hessian.npy"
    np.save(h, np.load(h)[:3])
    assert_fails(
        tmp_path,
        [folder],
        [str(folder / "sys-0000"), "structure 0 (set.000 frame 0)", "3 frames"],
    )


def test_truncated_hdf5(tmp_path, path_records):
    good = tmp_path / "train.h5"
    write_records(good, path_records, EV)
    raw = good.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: len(raw) // 2])
    message = assert_fails(tmp_path, [cut], [str(cut), "truncated or corrupt"])
    assert "cannot tell the format" not in message
    with pytest.raises(HessianDataError, match="cut.h5: cannot open the HDF5 file"):
        next(iread(cut))


def test_corrupt_sqlite(tmp_path, path_records):
    good = tmp_path / "train.db"
    write_records(good, path_records, EV)
    raw = bytearray(good.read_bytes())
    raw[100:4096] = b"\xff" * (4096 - 100)
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(raw))
    assert_fails(tmp_path, [bad], [str(bad), "cannot read it as spkdb"])


def test_corrupt_training_files_fail_on_loading(tmp_path, path_records):
    for suffix, cut in (("db", lambda raw: raw[:100] + b"\xff" * 4000), ("h5", None)):
        good = tmp_path / f"train.{suffix}"
        write_records(good, path_records, EV)
        raw = good.read_bytes()
        bad = tmp_path / f"bad.{suffix}"
        bad.write_bytes(cut(raw) if cut else raw[: len(raw) // 2])
        for load in (
            lambda: next(iread(bad)),
            lambda: HessianDataModule(
                str(bad), batch_size=2, num_train=2, num_val=2, split_file=None
            ).setup(),
        ):
            with pytest.raises(HessianDataError, match=f"bad.{suffix}: cannot "):
                load()


def test_validation_errors_name_the_input_not_the_output(
    tmp_path, path_records, write_horm_lmdb
):
    path_records[4].hessian[0, :3] = np.nan
    src = tmp_path / "in.lmdb"
    write_horm_lmdb(src, path_records)
    for out in ("out.h5", "out.db", "out.xyz"):
        with pytest.raises(HessianDataError) as info:
            convert([src], tmp_path / out)
        message = str(info.value)
        assert message.startswith(f"{src}: structure 4: Hessian is partially NaN")
        assert out not in message
    assert not [p for p in tmp_path.iterdir() if "out." in p.name]


def test_refused_pickle_in_lmdb(tmp_path, path_records, write_horm_lmdb):
    lmdb = pytest.importorskip("lmdb")
    path = tmp_path / "evil.lmdb"
    write_horm_lmdb(path, path_records[:3])
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(b"1", pickle.dumps(pickle.Pickler))  # a class outside torch/numpy
    env.close()
    assert_fails(tmp_path, [path], [str(path), "structure 1", "refusing to unpickle"])


def test_unknown_option_is_an_error(tmp_path, path_records, write_horm_lmdb):
    path = tmp_path / "in.lmdb"
    write_horm_lmdb(path, path_records[:2])
    with pytest.raises(HessianDataError, match="format horm takes no option 'forces"):
        open_source([path], forces_sign="gradient")


@pytest.mark.parametrize("rtol", ["-1", "2", "nan", "0"])
def test_nonsensical_tolerances(tmp_path, path_records, capsys, rtol):
    path = tmp_path / "in.xyz"
    write_extxyz(path, path_records[:2], EV)
    assert main([str(path), "-o", str(tmp_path / "o.h5"), "--rtol", rtol]) == 1
    assert "tolerance must be a number in (0, 1)" in capsys.readouterr().err
    assert main(["--check", str(path), "--physics-rtol", rtol]) == 1
    assert "tolerance must be a number in (0, 1)" in capsys.readouterr().err


def test_reaction_names_become_ids(tmp_path, path_records):
    path = tmp_path / "named.xyz"
    names = ["keto_enol_3", "keto_enol_3", "diels_alder_1", "keto_enol_3"]
    for rec, name in zip(path_records, names):
        rec.reaction = name
    write_extxyz(path, path_records[:4], EV)
    text = path.read_text()  # unquoted, as reaction sets label their frames
    path.write_text(text.replace('reaction="keto_enol_3"', "reaction=keto_enol_3"))
    assert "reaction=keto_enol_3 " in path.read_text()
    for suffix in ("h5", "db"):
        out = tmp_path / f"named.{suffix}"
        convert([path], out)
        atoms = list(iread(out))
        assert [a.info["reaction"] for a in atoms] == [0, 0, 1, 0]
        assert [a.info["reaction_name"] for a in atoms] == names
        assert file_metadata(out)["reactions"] == {
            "0": {"name": "keto_enol_3"},
            "1": {"name": "diels_alder_1"},
        }


def test_non_integer_reaction_label_rejected(tmp_path, path_records):
    path = tmp_path / "frac.xyz"
    path_records[1].reaction = 5
    write_extxyz(path, path_records[:3], EV)
    path.write_text(path.read_text().replace("reaction=5 ", "reaction=1.7 "))
    assert_fails(tmp_path, [path], [str(path), "structure 1", "1.7 is not an integer"])


def test_mixed_ids_and_names_rejected(tmp_path, path_records):
    path = tmp_path / "mixed.xyz"
    path_records[0].reaction, path_records[1].reaction = 3, "keto_enol_3"
    write_extxyz(path, path_records[:2], EV)
    with pytest.raises(HessianDataError, match="structure 1.*name 'keto_enol_3'"):
        convert([path], tmp_path / "out.h5")
    assert not [p for p in tmp_path.iterdir() if "out.h5" in p.name]


def test_openreact_group_without_hessian_is_reported(
    tmp_path, quadratic_path, write_openreact, caplog
):
    path = tmp_path / "molecules-IRC.h5"
    write_openreact(
        path, {"/a": quadratic_path([1, 8, 1], 3), "/b": quadratic_path([1, 1], 2)}
    )
    with h5py.File(path, "a") as f:
        del f["/b/hessian"]
    with caplog.at_level("WARNING"):
        report = convert([path], tmp_path / "o.h5", forces_sign="forces")
    assert report.n_hessians == 3 and report.n_structures == 5
    assert "/b has no hessian dataset; its 2 conformers" in caplog.text


def test_read_records_unchanged_by_origin(tmp_path, path_records):
    path = tmp_path / "in.xyz"
    write_extxyz(path, path_records[:2], EV)
    out = tmp_path / "o.h5"
    convert([path], out)
    assert [r.origin for r in read_records(out)] == [None, None]
    recs = list(open_source([path]).records)
    assert [str(r.origin) for r in recs] == [f"{path}: structure {i}" for i in (0, 1)]


def test_reports_name_the_input_of_the_worst_structure(tmp_path, path_records):
    a, b = tmp_path / "a.xyz", tmp_path / "b.xyz"
    write_extxyz(a, path_records[:3], EV)
    path_records[4].hessian = path_records[4].hessian + np.triu(
        np.full_like(path_records[4].hessian, 1e-3), 1
    )
    write_extxyz(b, path_records[3:6], EV)
    report = check([a, b])
    assert report["worst_index"] == 4  # running count over both inputs
    assert report["worst_asymmetry_at"] == f"{b}: structure 1"
    assert report["physics"]["worst_rotation_at"].startswith(str(tmp_path))


def _one_atom(hessian):
    return HessianRecord(
        numbers=np.array([8]),
        positions=np.zeros((1, 3)),
        energy=-75.0,
        forces=np.zeros((1, 3)),
        hessian=hessian,
    )


def _coincident(r):
    r.positions[3] = r.positions[1]


def _collapsed(r):
    r.positions = r.positions * 1e-4


def _absurd_energy(r):
    r.energy = -1e4 * r.n_atoms  # Hartree: 2.7e5 eV per atom


@pytest.mark.parametrize(
    "mutate,message",
    [
        (_coincident, "atoms 1 and 3 are 0 Ang apart, closer than 0.1 Ang"),
        (_collapsed, "degenerate geometry: all 4 atoms lie within"),
        (_absurd_energy, "eV is 2.72e+05 eV per atom in magnitude, beyond 1e+05"),
    ],
)
def test_structures_that_poison_training_are_refused(
    tmp_path, path_records, write_openreact, mutate, message
):
    mutate(path_records[2])
    path = tmp_path / "bad.h5"
    write_openreact(path, {"/a": path_records[:4]})
    assert_fails(tmp_path, [path], [f"{path}: structure 2 (/a", message], kind="ts")


def test_one_atom_hessian_must_vanish(tmp_path, path_records, write_openreact):
    path = tmp_path / "atom.h5"
    write_openreact(path, {"/a": path_records[:2], "/o": [_one_atom(np.zeros((3, 3)))]})
    assert check([path], kind="ts")["structures"] == 3
    write_openreact(path, {"/a": path_records[:2], "/o": [_one_atom(50 * np.eye(3))]})
    assert_fails(
        tmp_path,
        [path],
        [f"{path}: structure 2 (/o", "one-atom structure with a nonzero Hessian"],
        kind="ts",
    )


@pytest.mark.parametrize("suffix", ["h5", "db"])
def test_input_without_structures_is_refused(tmp_path, suffix, capsys):
    empty = tmp_path / f"empty.{suffix}"
    write_records(empty, [])
    assert_fails(tmp_path, [empty], [f"{empty}: holds no structures"])
    assert main(["--check", str(empty)]) == 1
    assert f"{empty}: holds no structures" in capsys.readouterr().err
