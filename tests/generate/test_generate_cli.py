"""``spkhess-generate``: the console script, enumeration from a SMILES list, and an
enumerated reaction run end to end at GFN2-xTB; nothing imports torch before
tblite."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from schnetpack_hessian import data
from schnetpack_hessian.cli.generate import main

from .conftest import HCN_HNC, NH3_INVERSION, script_env, write_reactions


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


def test_enumerate_writes_a_reaction_list(tmp_path, caplog, capsys):
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
    hand = tmp_path / "hand.yaml"
    hand.write_text("reactions:\n  - id: 0\n    name: x\n")
    capsys.readouterr()
    status = main(
        ["enumerate", "--molecules", str(smi), "--out", str(more)]
        + ["--exclude", str(hand)]
    )
    assert status == 1 and "no 'key'" in capsys.readouterr().err


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


#: ``spkhess-generate`` whose reactions compute for ever (no QC program needed).
_FOREVER = """
import multiprocessing, sys, time
import schnetpack_hessian.generate.workflow as wf

def forever(*args, **kwargs):
    while True:
        time.sleep(0.05)

multiprocessing.set_start_method("fork")
wf.run_reaction = forever
from schnetpack_hessian.cli.generate import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_worker(tmp_path, sig):
    from schnetpack_hessian.testing import alive, descendants, wait_until

    reactions = write_reactions(tmp_path / "r.yaml", NH3_INVERSION, HCN_HNC)
    proc = subprocess.Popen(
        [sys.executable, "-c", _FOREVER, "run", "--reactions", str(reactions),
         "--workdir", str(tmp_path / "work"), "--workers", "2", "--no-progress"],
        env=script_env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_until(lambda: len(descendants(proc.pid)) >= 2, 60)
        workers = descendants(proc.pid)
        proc.send_signal(sig)
        assert proc.wait(30) == 128 + sig
        assert wait_until(lambda: not any(map(alive, workers)), 5), workers
        # the CLI's own last word; on a loaded machine the interpreter's shutdown of
        # the killed pool can add an "Exception ignored" line after it (rare)
        err = proc.stderr.read()
        said = f"spkhess-generate: interrupted ({sig.name})"
        assert any(line.startswith(said) for line in err.splitlines()), err
    finally:
        proc.kill()


def test_workers_die_with_a_killed_parent(tmp_path):
    """SIGKILL leaves no time to stop them: the kernel does (a rerun would otherwise
    find them computing the same reactions)."""
    from schnetpack_hessian.testing import alive, descendants, wait_until

    reactions = write_reactions(tmp_path / "r.yaml", NH3_INVERSION, HCN_HNC)
    proc = subprocess.Popen(
        [sys.executable, "-c", _FOREVER, "run", "--reactions", str(reactions),
         "--workdir", str(tmp_path / "work"), "--workers", "2", "--no-progress"],
        env=script_env(), stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers = []
    try:
        assert wait_until(lambda: len(descendants(proc.pid)) >= 2, 60)
        workers = descendants(proc.pid)
        proc.kill()
        proc.wait(10)
        assert wait_until(lambda: not any(map(alive, workers)), 5), workers
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_second_run_to_one_out_is_refused_at_start(tmp_path, capsys):
    """Before, both computed for hours and the later one failed (or replaced the
    earlier's file) only when writing --out."""
    from schnetpack_hessian.testing import descendants, wait_until

    reactions = write_reactions(tmp_path / "r.yaml", NH3_INVERSION, HCN_HNC)
    out = tmp_path / "set.h5"
    run = ["run", "--reactions", str(reactions), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(
        [sys.executable, "-c", _FOREVER, *run, "--workdir", str(tmp_path / "w1"),
         "--workers", "2"],
        env=script_env(), stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_until(lambda: len(descendants(first.pid)) >= 2, 60)
        assert main(run + ["--workdir", str(tmp_path / "w2")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"spkhess-generate: error: {out}: process {first.pid} ")
        assert not (tmp_path / "w2").exists()
    finally:
        first.terminate()
        first.wait(30)
    assert not out.exists()


def test_missing_list_bad_shard_and_bad_out_are_sentences(tmp_path, capsys):
    work = str(tmp_path / "work")
    missing = tmp_path / "missing.yaml"
    assert main(["run", "--reactions", str(missing), "--workdir", work]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"spkhess-generate: error: {missing}: no such file or directory"
    reactions = write_reactions(tmp_path / "r.yaml", NH3_INVERSION)
    run = ["run", "--reactions", str(reactions), "--workdir", work]
    assert main(run + ["--shard", "3"]) == 1
    assert capsys.readouterr().err.strip() == (
        "spkhess-generate: error: shard '3' is not of the form I/N"
    )
    # checked before any reaction runs (the work directory is not even created)
    assert main(run + ["--out", str(tmp_path / "x.xyz")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"spkhess-generate: error: --out {tmp_path / 'x.xyz'}: ")
    assert "expected a .h5 or .hdf5 or .db file" in err
    (tmp_path / "old.h5").write_text("")
    assert main(run + ["--out", str(tmp_path / "old.h5")]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("content", [None, "not HDF5"])
def test_bad_shard_file_is_a_sentence(tmp_path, content, capsys):
    shard = tmp_path / "shard.h5"
    if content is not None:
        shard.write_text(content)
    out = tmp_path / "merged.h5"
    assert main(["merge", str(shard), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"spkhess-generate: error: shard {shard}: ")
    assert "\n" not in err and not out.exists()
