"""End-to-end generation with GFN2-xTB (tblite): labels, frequencies, resumption
after a kill, and shards that merge into the single-run data set."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from schnetpack_hessian import data, vibrations
from schnetpack_hessian.generate import merge
from schnetpack_hessian.generate.store import read_json


def assert_same_dataset(path_a, path_b):
    a, b = list(data.iread(path_a)), list(data.iread(path_b))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.info["kind"] == y.info["kind"]
        assert x.info["reaction"] == y.info["reaction"]
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_array_equal(x.positions, y.positions)
        assert x.get_potential_energy() == y.get_potential_energy()
        np.testing.assert_array_equal(x.get_forces(), y.get_forces())
        np.testing.assert_array_equal(x.info["hessian"], y.info["hessian"])


def test_generated_set_is_labelled_and_physical(xtb_run):
    _, work, out = xtb_run
    structures = list(data.iread(out))
    kinds = [(a.info["reaction"], a.info["kind"]) for a in structures]
    for rid in (3, 7):
        got = [k for r, k in kinds if r == rid]
        assert got[:3] == ["reactant", "product", "ts"]
        assert got.count("irc") == 4 and got.count("nms") == 4
    # reaction order, then reactant/product/ts/irc/nms within a reaction
    assert [r for r, _ in kinds] == sorted(r for r, _ in kinds)
    for atoms in structures:
        h = atoms.info["hessian"]
        assert h.shape == (3 * len(atoms),) * 2
        np.testing.assert_allclose(h, h.T, atol=1e-8)
        n_imag = vibrations.count_imaginary(h, atoms=atoms)
        if atoms.info["kind"] in ("reactant", "product"):
            assert n_imag == 0
            assert np.abs(atoms.get_forces()).max() < 0.02
        elif atoms.info["kind"] == "ts":
            assert n_imag == 1
    # the TS is the highest point of the stored IRC
    for rid in (3, 7):
        e = {
            a.info["kind"]: a.get_potential_energy()
            for a in structures
            if a.info["reaction"] == rid and a.info["kind"] != "irc"
        }
        irc = [
            a.get_potential_energy()
            for a in structures
            if a.info["reaction"] == rid and a.info["kind"] == "irc"
        ]
        assert max(irc) < e["ts"] and e["reactant"] < e["ts"] and e["product"] < e["ts"]
    md = data.file_metadata(out)
    assert md["level_of_theory"]["program"] == "tblite"
    assert md["reactions"]["3"]["status"] == "done"
    assert read_json(work / "r0003" / "done.json")["counts"]["nms"] == 4


def test_rerun_skips_finished_work(xtb_run, script, tmp_path):
    yaml, work, out = xtb_run
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*.npz")}
    again = tmp_path / "again.h5"
    script.run(
        "run", "--reactions", yaml, "--workdir", work, "--out", again, *script.cheap
    )
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.npz")} == before
    assert_same_dataset(out, again)


def test_killed_and_restarted_run_gives_the_same_file(xtb_run, script, tmp_path):
    yaml, _, full = xtb_run
    work, out = tmp_path / "work", tmp_path / "resumed.h5"
    args = ["run", "--reactions", yaml, "--workdir", work, "--out", out, *script.cheap]
    proc = subprocess.Popen(
        script.args(*args),
        env=script.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    try:
        # kill in the middle of labelling the first reaction's IRC points
        while not list(work.glob("r0003/irc_[0-9]*.npz")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (work / "r0003" / "done.json").exists()
    assert not out.exists()
    script.run(*args)
    assert_same_dataset(full, out)


def test_shards_merge_into_the_single_run(xtb_run, script, tmp_path):
    """Shards share the (finished) work directory of the full run, as on a
    cluster file system; each shard writes only its own reactions."""
    yaml, work, full = xtb_run
    shard_files = []
    for i in range(2):
        f = tmp_path / f"shard{i}.h5"
        script.run(
            "run",
            "--reactions",
            yaml,
            "--workdir",
            work,
            "--out",
            f,
            "--shard",
            f"{i}/2",
            *script.cheap,
        )
        shard_files.append(f)
    assert {a.info["reaction"] for a in data.iread(shard_files[0])} == {3}
    assert {a.info["reaction"] for a in data.iread(shard_files[1])} == {7}
    merged = tmp_path / "merged.h5"
    assert merge(shard_files[::-1], merged) == len(list(data.iread(full)))
    assert_same_dataset(full, merged)
    assert set(data.file_metadata(merged)["reactions"]) == {"3", "7"}
    linked = tmp_path / "linked"  # a reaction directory linked into a second work dir
    linked.mkdir()
    (linked / "r0003").symlink_to(work / "r0003")
    assembled = tmp_path / "assembled.h5"
    script.run("assemble", work, linked, "--out", assembled)
    assert_same_dataset(full, assembled)
    assert data.file_metadata(assembled)["generation"]["n_irc"] == 4


def test_summary_tables_count_the_file(xtb_run):
    from schnetpack_hessian.generate.report import summarize

    _, _, out = xtb_run
    text = summarize(out)
    assert "| 1 | 1 | 1 | 4 | 4 | 11 |" not in text  # totals are over both reactions
    assert "| 2 | 2 | 2 | 8 | 8 | 22 |" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| 3 |")]
    assert len(rows) == 1 and "NH3 umbrella inversion" in rows[0] and "i |" in rows[0]


def test_card_tables_and_plot_come_from_the_file(xtb_run, script, tmp_path):
    _, _, out = xtb_run
    png, card = tmp_path / "card.png", tmp_path / "card.md"
    card.write_text(
        "# Card\n\n<!-- card tables: begin -->\nold\n<!-- card tables: end -->\n\nrest\n"
    )
    text = script.run("card", out, "--plot", png, "--update", card).stdout
    written = card.read_text()
    assert written.startswith("# Card\n") and written.endswith("\n\nrest\n")
    assert text.strip() in written and "old" not in written
    assert "| 2 | 2 | 2 | 8 | 8 | 22 |" in text
    assert "| hand-written | 2 | 0 | 100 % |" in text
    assert "| ts | 1: 2 |" in text and "| reactant | 0: 2 |" in text
    assert "| atoms | 3 | 4 |" in text and "| reactions | 1 | 1 |" in text
    assert "No reaction was rejected." in text
    per_reaction = script.run("card", out, "--per-reaction").stdout
    assert (
        per_reaction.startswith(text)
        and "| 3 | NH3 umbrella inversion |" in per_reaction
    )
    assert "No reaction recorded in the file's metadata is missing" in per_reaction
    assert png.stat().st_size > 10_000


def test_float32_assembly_halves_the_hessians(xtb_run, script, tmp_path):
    import h5py

    _, work, out = xtb_run
    small = tmp_path / "float32.h5"
    script.run("assemble", work, "--out", small, "--precision", "float32")
    with h5py.File(small) as f:
        dtypes = {name: ds.dtype for name, ds in f["properties"].items()}
    assert dtypes["hessian"] == np.float32 and dtypes["forces"] == np.float32
    for a, b in zip(data.iread(out), data.iread(small)):
        np.testing.assert_allclose(
            b.info["hessian"], a.info["hessian"], rtol=1e-6, atol=1e-5
        )
        assert b.get_potential_energy() == a.get_potential_energy()
    smallest = tmp_path / "smallest.h5"
    script.run("assemble", work, "--out", smallest, "--max-reactions", "1")
    assert {a.info["reaction"] for a in data.iread(smallest)} == {7}  # HCN, 3 atoms
    left_out = data.file_metadata(smallest)["reactions"]["3"]
    assert left_out["status"] == "rejected"
    assert left_out["reason"].startswith(
        "left out at assembly: 4 atoms; the 1 smallest"
    )
    short = tmp_path / "short.h5"
    proc = script.run("assemble", work, "--out", short, "--min-irc", "5", check=False)
    assert proc.returncode != 0 and "--min-irc" in proc.stderr and not short.exists()


def test_minimum_that_changes_bonds_is_rejected(script, tmp_path, tblite_available):
    """A product whose hydrogen is too far to count as bonded optimises back to
    water: that is another species than the reaction names, so it is rejected."""
    from .conftest import write_reactions

    entry = """\
  - id: 1
    name: water with a loose hydrogen
    reactant:
      xyz: |
        O 0.0 0.0 0.0
        H 0.96 0.0 0.0
        H -0.24 0.93 0.0
    product:
      xyz: |
        O 0.0 0.0 0.0
        H 0.96 0.0 0.0
        H -0.34 1.31 0.0
"""
    yaml = write_reactions(tmp_path / "r.yaml", entry)
    script.run("run", "--reactions", yaml, "--workdir", tmp_path / "w", *script.cheap)
    reason = read_json(tmp_path / "w" / "r0001" / "rejected.json")["reason"]
    assert "product: optimisation changed the bonds (O0-H2 formed)" in reason
    assert (tmp_path / "w" / "r0001" / "reactant.npz").exists()


def test_merge_keeps_colliding_reactions_apart(tmp_path, caplog):
    """Two separate runs both number from 0: the merged file keeps each reaction's
    structures and name under its own id; a file given twice is reported."""
    from schnetpack_hessian.data.testing import make_atoms

    files = []
    for seed, names in ((0, ["a_to_b", "c_to_d"]), (1, ["e_to_f", "g_to_h"])):
        f = tmp_path / f"run{seed}.h5"
        table = {str(i): {"name": n, "smiles": n.upper()} for i, n in enumerate(names)}
        atoms = make_atoms(n_structures=4, seed=seed, n_reactions=2)
        data.write(f, atoms, metadata={"reactions": table})
        files.append(f)
    merged = tmp_path / "merged.h5"
    assert merge(files, merged) == 8
    got = list(data.iread(merged))
    by_name = {}
    for a in got:
        by_name.setdefault(a.info["reaction_name"], set()).add(a.info["reaction"])
    assert sorted(by_name) == ["a_to_b", "c_to_d", "e_to_f", "g_to_h"]
    assert all(len(ids) == 1 for ids in by_name.values())
    assert len(set.union(*by_name.values())) == 4
    table = data.file_metadata(merged)["reactions"]
    assert table[str(next(iter(by_name["g_to_h"])))]["smiles"] == "G_TO_H"
    with caplog.at_level("WARNING"):
        merge([files[0], files[0]], tmp_path / "twice.h5")
    assert "4 structure(s) repeat an earlier one" in caplog.text
