"""spkhess-convert: conversions, --check, errors, atomic output."""

import json

import numpy as np
import pytest

from schnetpack_hessian.cli.convert import build_parser, main, run
from schnetpack_hessian.data import HessianDataError, HessianDataModule, iread


@pytest.fixture
def horm_file(tmp_path, path_records, write_horm_lmdb):
    path = tmp_path / "in.lmdb"
    write_horm_lmdb(path, path_records)
    return path


def test_convert_and_check(tmp_path, horm_file, capsys):
    out = tmp_path / "out.h5"
    assert (
        main(
            [
                str(horm_file),
                "-o",
                str(out),
                "--float32",
                "--quiet",
                "--metadata",
                "note=test",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["structures"] == 8 and report["hessians"] == 8
    assert report["duplicates"] == 0
    assert main(["--check", str(out), "--quiet"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["format"] == "training" and checked["hessians"] == 8
    assert checked["metadata"]["note"] == "test"
    assert checked["worst_index"] is not None
    atoms = list(iread(out))
    assert atoms[0].info["hessian"].shape == (12, 12)


def test_no_overwrite_and_error_exit(tmp_path, horm_file, capsys):
    out = tmp_path / "out.db"
    assert main([str(horm_file), "-o", str(out), "--quiet"]) == 0
    assert main([str(horm_file), "-o", str(out), "--quiet"]) == 1
    assert "exists" in capsys.readouterr().err
    assert main([str(horm_file), "-o", str(out), "--quiet", "--overwrite"]) == 0
    assert main([str(horm_file), "-o", str(tmp_path / "x.txt"), "--quiet"]) == 1
    assert "cannot tell the output format" in capsys.readouterr().err


def test_interrupted_conversion_leaves_nothing(tmp_path, path_records, write_horm_lmdb):
    path_records[5].hessian = np.full((12, 12), np.inf)
    bad = tmp_path / "bad.lmdb"
    write_horm_lmdb(bad, path_records)
    args = build_parser().parse_args(
        [str(bad), "-o", str(tmp_path / "o.h5"), "--quiet"]
    )
    with pytest.raises(
        HessianDataError, match="structure 5: Hessian contains infinite"
    ):
        run(args)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".o.h5", "o.h5"))]
    args = build_parser().parse_args(["--check", str(bad), "--quiet"])
    with pytest.raises(HessianDataError, match="structure 5"):
        run(args)


def test_symmetrize(tmp_path, path_records, write_horm_lmdb):
    for r in path_records:
        r.hessian = r.hessian + np.triu(np.full_like(r.hessian, 1e-3), 1)
    src = tmp_path / "a.lmdb"
    write_horm_lmdb(src, path_records)
    out = tmp_path / "sym.h5"
    run(
        build_parser().parse_args([str(src), "-o", str(out), "--quiet", "--symmetrize"])
    )
    h = next(iread(out)).info["hessian"]
    np.testing.assert_array_equal(h, h.T)


def test_converted_file_loads_in_datamodule(tmp_path, horm_file):
    out = tmp_path / "dm.h5"
    main([str(horm_file), "-o", str(out), "--quiet", "--kind", "nms"])
    dm = HessianDataModule(
        str(out),
        batch_size=2,
        num_train=4,
        num_val=2,
        num_workers=0,
        split_file=str(tmp_path / "split.npz"),
    )
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["hessian"].shape == (2 * 16, 3, 3)
    assert len(list(dm.extrapolation_dataloader("nms"))) == 4


def test_format_options_come_from_the_readers(tmp_path, horm_file, capsys):
    out = tmp_path / "o.h5"
    argv = [str(horm_file), "-o", str(out), "--quiet", "--forces-sign", "gradient"]
    assert main(argv) == 1
    assert "format horm takes no option 'forces_sign'" in capsys.readouterr().err
    assert not out.exists()
    assert (
        main([str(horm_file), "-o", str(out), "--quiet", "--reaction-key", "rxn"]) == 0
    )
    assert {a.info["reaction"] for a in iread(out)} == {7}
    assert "--hessian-key" in build_parser().format_help()


def test_the_same_input_twice_is_counted_in_the_report(tmp_path, horm_file, capsys):
    out = tmp_path / "twice.h5"
    assert main([str(horm_file), str(horm_file), "-o", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates"] == 8


def _leftovers(directory):
    """Files a writer may leave beside its output (partials, claims, journals)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_second_writer_is_refused(tmp_path, horm_file, capsys):
    from schnetpack_hessian.testing import claim_elsewhere

    out = tmp_path / "out.h5"
    holder = claim_elsewhere(out)  # a conversion to out.h5 is running
    try:
        assert main([str(horm_file), "-o", str(out), "--quiet", "--overwrite"]) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"spkhess-convert: error: {out}: process {holder.pid} ")
    assert "is writing it" in err and "\n" not in err
    assert not out.exists() and _leftovers(tmp_path) == [f".{out.name}.lock"]
    assert main([str(horm_file), "-o", str(out), "--quiet"]) == 0


def _tmpfs(path, size="256k"):
    import subprocess

    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the monkeypatched "
                    "variants cover the full disk")  # fmt: skip
    return path


@pytest.mark.parametrize("suffix", [".h5", ".db"])
def test_full_disk_gives_a_sentence_and_leaves_nothing(tmp_path, suffix, capsys):
    import subprocess

    from schnetpack_hessian.datasets import reactive_set_path

    disk = _tmpfs(tmp_path / "disk")
    try:
        out = disk / f"out{suffix}"
        assert main([str(reactive_set_path()), "-o", str(out), "--quiet"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"spkhess-convert: error: {out}: no space left")
        assert "\n" not in err and list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_full_disk_h5_is_refused_before_hdf5_writes(
    tmp_path, horm_file, monkeypatch, capsys
):
    """HDF5 crashes (segmentation fault) when it meets a full disk itself."""
    import os
    from types import SimpleNamespace

    import h5py

    writes = []
    monkeypatch.setattr(
        os, "statvfs", lambda p: SimpleNamespace(f_bavail=10, f_frsize=4096)
    )
    monkeypatch.setattr(
        h5py.Dataset, "resize", lambda *a, **k: writes.append(a) or 1 / 0
    )
    out = tmp_path / "out.h5"
    assert main([str(horm_file), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"spkhess-convert: error: {out}: no space left on device")
    assert "\n" not in err and writes == []
    assert not out.exists() and _leftovers(tmp_path) == []


def test_full_disk_db_gives_a_sentence(tmp_path, horm_file, monkeypatch, capsys):
    import sqlite3

    from schnetpack_hessian.data.dbfile import DBAppender

    def full(self):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(DBAppender, "flush", full)
    out = tmp_path / "out.db"
    assert main([str(horm_file), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"spkhess-convert: error: {out}: no space left on device; nothing was written"
    )
    assert not out.exists() and _leftovers(tmp_path) == []


def test_read_only_directory_gives_a_sentence(tmp_path, horm_file, monkeypatch, capsys):
    import errno
    import os

    import schnetpack_hessian.files as files

    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(files.os, "open", read_only)
    out = tmp_path / "ro" / "out.h5"
    assert main([str(horm_file), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"spkhess-convert: error: {out}: read-only file system; nothing was written"
    )
    assert list((tmp_path / "ro").iterdir()) == []


@pytest.mark.skipif(
    hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
    reason="root writes into read-only directories; the monkeypatched test covers it",
)
def test_unwritable_directory_with_chmod(tmp_path, horm_file, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main([str(horm_file), "-o", str(ro / "out.h5"), "--quiet"]) == 1
        err = capsys.readouterr().err.strip()
        assert "permission denied" in err and "\n" not in err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_ctrl_c_is_one_line_and_removes_the_partial(
    tmp_path, horm_file, monkeypatch, capsys
):
    from schnetpack_hessian.data.io import RecordWriter

    real_add = RecordWriter.add

    def add(self, record, source=None):
        if self.report.n_structures == 3:
            raise KeyboardInterrupt
        real_add(self, record, source)

    monkeypatch.setattr(RecordWriter, "add", add)
    out = tmp_path / "out.h5"
    assert main([str(horm_file), "-o", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("spkhess-convert: interrupted") and "\n" not in err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_unreadable_input_is_not_reported_as_the_output(
    tmp_path, horm_file, monkeypatch, capsys
):
    import errno

    import schnetpack_hessian.convert as convert

    def unreadable(*args, **kwargs):  # fails while the writer holds the output
        raise PermissionError(errno.EACCES, "Permission denied", str(horm_file))
        yield

    monkeypatch.setattr(convert, "_validated", unreadable)
    out = tmp_path / "out.h5"
    assert main([str(horm_file), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"spkhess-convert: error: {horm_file}: permission denied"
    assert not out.exists() and _leftovers(tmp_path) == []
