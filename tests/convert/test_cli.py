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
