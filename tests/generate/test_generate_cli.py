"""``spkhess-generate``: the console script, enumeration from a SMILES list, and an
enumerated reaction run end to end at GFN2-xTB; nothing imports torch before
tblite."""

import shutil
import subprocess
import sys

import pytest
import yaml

from schnetpack_hessian import data
from schnetpack_hessian.cli.generate import main

from .conftest import script_env


def test_generator_imports_do_not_load_torch():
    """tblite's C extension fails to import once torch has loaded its own libgomp,
    so nothing on the generator's path may import torch eagerly."""
    code = (
        "import sys; import schnetpack_hessian, schnetpack_hessian.generate, "
        "schnetpack_hessian.cli.generate; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_lazy_package_attributes_still_resolve():
    import schnetpack_hessian as shp

    assert shp.Hessian.__name__ == "Hessian"
    assert shp.nn.__name__ == "schnetpack_hessian.nn"
    assert set(shp.__all__) <= set(dir(shp))
    with pytest.raises(AttributeError, match="no_such_name"):
        shp.no_such_name


def test_enumerate_writes_a_reaction_list(tmp_path, caplog):
    smi = tmp_path / "m.smi"
    smi.write_text("# list\nN ammonia\nC#N\nC[Si] silyl\n")
    out = tmp_path / "r.yaml"
    assert main(["enumerate", "--molecules", str(smi), "--out", str(out)]) == 0
    text = out.read_text()
    assert "spkhess-generate enumerate --molecules" in text
    assert "skipped line 4 (unsupported element(s) Si" in text
    assert "line 4" in caplog.text
    entries = yaml.safe_load(text)["reactions"]
    assert {e["edit"] for e in entries} >= {"inversion", "h_shift_12"}
    one = tmp_path / "one.yaml"
    main(
        ["enumerate", "--molecules", str(smi), "--out", str(one), "--per-edit", "1"]
        + ["--first-id", "5"]
    )
    picked = yaml.safe_load(one.read_text())["reactions"]
    edits = [e["edit"] for e in picked]
    assert len(edits) == len(set(edits)) and picked[0]["id"] == 5
    # growing a set: a second list leaves out every reaction of the first
    more = tmp_path / "more.yaml"
    main(
        [
            "enumerate",
            "--molecules",
            str(smi),
            "--out",
            str(more),
            "--exclude",
            str(one),
        ]
    )
    rest = yaml.safe_load(more.read_text())["reactions"]
    assert {e["key"] for e in rest}.isdisjoint(e["key"] for e in picked)
    assert len(rest) == len(entries) - len(picked) > 0
    assert f"{len(picked)} of them excluded (listed in {one})" in more.read_text()
    with pytest.raises(Exception, match="no 'key'"):
        hand = tmp_path / "hand.yaml"
        hand.write_text("reactions:\n  - id: 0\n    name: x\n")
        main(
            ["enumerate", "--molecules", str(smi), "--out", str(more)]
            + ["--exclude", str(hand)]
        )


def test_enumerated_reaction_runs_end_to_end(tmp_path, tblite_available, script):
    """NH3 inversion, enumerated from SMILES, through the installed console script:
    enumerate → run (GFN2-xTB) → assemble → merge (about 10 s)."""
    exe = shutil.which("spkhess-generate")
    if exe is None:
        pytest.skip("spkhess-generate is not installed (pip install -e .)")
    smi = tmp_path / "m.smi"
    smi.write_text("N ammonia\n")
    reactions, work = tmp_path / "r.yaml", tmp_path / "work"

    def cli(*args):
        proc = subprocess.run(
            [exe, *map(str, args)], env=script_env(), capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    cli("enumerate", "--molecules", smi, "--out", reactions, "--edits", "inversion")
    out = tmp_path / "run.h5"
    cli("run", "--reactions", reactions, "--workdir", work, "--out", out, *script.cheap)
    kinds = [a.info["kind"] for a in data.iread(out)]
    assert kinds[:3] == ["reactant", "product", "ts"]
    assert kinds.count("irc") == 4 and kinds.count("nms") == 4
    meta = data.file_metadata(out)
    assert meta["reactions"]["0"]["name"] == "inversion: N >> N"
    assembled, merged = tmp_path / "assembled.h5", tmp_path / "merged.h5"
    cli("assemble", work, "--out", assembled)
    cli("merge", assembled, "--out", merged)
    assert len(list(data.iread(merged))) == len(kinds)
