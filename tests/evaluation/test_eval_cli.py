"""spkhess-eval on real spktrain runs: every output file, --compare, clear errors."""

import csv
import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

import schnetpack as spk

from schnetpack_hessian.cli.eval import main, split_models_and_data
from schnetpack_hessian.data import iread, write
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.evaluation.model import EvaluationError
from schnetpack_hessian.testing import run_spktrain

pytestmark = pytest.mark.integration

PLOTS = (
    "parity.png",
    "hessian_error_hist.png",
    "frequencies.png",
    "eigenvalues.png",
    "irc_profiles.png",
    "ts_search.png",
)
FAST_TS = ["--ts-perturbations", "1", "--no-irc-starts", "--ts-steps", "40"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Data (two shipped reactions) and an E+F and an E+F+H spktrain run on it."""
    root = tmp_path_factory.mktemp("eval")
    data = root / "two_reactions.h5"
    write(data, [a for a in iread(reactive_set_path()) if a.info["reaction"] < 2])
    for experiment, run_id in (("reactive_ef", "ef"), ("reactive_efh", "efh")):
        result = run_spktrain(
            [
                f"experiment={experiment}",
                f"data.datapath={data}",
                "trainer.max_epochs=3",
                "data.num_train=4",
                "data.num_val=1",
                "model.representation.n_atom_basis=16",
                "model.representation.n_interactions=1",
                "logger=csv",
                "globals.atomrefs=False",
                f"run.id={run_id}",
            ],
            cwd=root,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return root, data


def test_compare_writes_every_file_and_one_table(runs, capsys):
    root, data = runs
    out = root / "compare"
    argv = ["--compare", str(root / "runs/ef"), str(root / "runs/efh"), str(data)]
    argv += ["--groups", "all=ef,efh", "just_ef=ef"]
    assert main(argv + ["-o", str(out), "--no-progress"] + FAST_TS) == 0
    printed = capsys.readouterr().out
    for name in ("metrics.json", "structures.csv", "ts_searches.csv", "report.md"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    for png in PLOTS:
        assert (out / png).stat().st_size > 1000, png
        assert f"]({png})" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"ef", "efh"}
    assert metrics["units"]["kcal/mol"]["hessian"] == "kcal/mol/Ang^2"
    for model in metrics["models"].values():
        kcal, ev = model["kcal/mol"]["pooled"]["all"], model["eV"]["pooled"]["all"]
        assert kcal["n_structures"] == 50
        assert kcal["hessian_mae"] == pytest.approx(ev["hessian_mae"] * 23.0605, 1e-4)
        assert set(model["kcal/mol"]["pooled"]["kind"]) == {
            "reactant",
            "product",
            "ts",
            "irc",
            "nms",
        }
        assert set(model["kcal/mol"]["pooled"]["reaction"]) == {"0", "1"}
        assert len(model["kcal/mol"]["barriers"]["reactions"]) == 2
        assert model["ts_search"]["summary"]["model_hessian"]["n_searches"] == 2
    with open(out / "structures.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 100 and {r["model"] for r in rows} == {"ef", "efh"}
    assert "frequency_mae (cm^-1)" in rows[0] and "energy_error (kcal/mol)" in rows[0]
    # one table: a line per model and set, then barriers and TS searches per model
    assert "| ef | all | 50 |" in printed and "| efh | all | 50 |" in printed
    assert "TS success, model H" in printed
    # mean ± sd over groups of models, in the printout and the report
    assert "| all | 2 |" in printed and "| just_ef | 1 |" in printed
    assert "| all | 2 |" in report and " ± " in report
    ef = metrics["models"]["ef"]["kcal/mol"]["pooled"]["kind"]["irc"]["energy_mae"]
    assert f"| just_ef | 1 | {ef:.2f} ± 0.00 |" in printed


def test_groups_naming_unknown_models_fail_before_evaluating(runs, capsys):
    root, data = runs
    argv = [str(root / "runs/ef"), str(data), "--groups", "x=ef,nope"]
    assert main(argv + ["-o", str(root / "g")]) == 2
    assert "['nope'] are not among the models ['ef']" in capsys.readouterr().err
    assert not (root / "g").exists()


def test_single_model_from_best_model_file_and_run_directory(runs, capsys):
    root, data = runs
    for model in (root / "runs/efh/best_model", root / "runs/efh"):
        out = root / f"single_{model.name}"
        argv = [str(model), str(data), "-o", str(out), "--no-progress"]
        assert main(argv + ["--skip-ts-search", "--kinds", "ts", "irc"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        stats = metrics["models"]["efh"]["kcal/mol"]["pooled"]
        assert set(stats["kind"]) == {"ts", "irc"}
        assert not (out / "ts_search.png").exists()
    assert "| efh | ts | 2 |" in capsys.readouterr().out


def test_data_without_hessians_skips_hessian_metrics_and_says_so(runs, capsys):
    root, data = runs
    atoms = list(iread(data))[:6]
    for a in atoms:
        a.info["hessian"] = None
    plain = root / "no_hessians.h5"
    write(plain, atoms)
    out = root / "plain"
    assert (
        main(
            [
                str(root / "runs/ef"),
                str(plain),
                "-o",
                str(out),
                "--no-progress",
                "--skip-ts-search",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.count("has no reference Hessians") == 1
    stats = json.loads((out / "metrics.json").read_text())["models"]["ef"]
    assert "hessian_mae" not in stats["eV"]["pooled"]["all"]
    assert stats["eV"]["pooled"]["all"]["forces_mae"] > 0


def test_elements_the_model_never_saw_are_one_clear_line(runs, capsys):
    root, _ = runs
    h2s = molecule("SH2")
    h2s.calc = SinglePointCalculator(h2s, energy=-10.0, forces=np.zeros((3, 3)))
    h2s.info.update(kind="reactant", reaction=0, hessian=None)
    data = root / "h2s.h5"
    write(data, [h2s])
    assert main([str(root / "runs/ef"), str(data), "-o", str(root / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "trained on H, C, N, O" in err and "structure 0 contains S" in err


def test_model_without_energy_output_is_one_clear_line(tmp_path, capsys):
    model = spk.model.NeuralNetworkPotential(
        representation=spk.representation.SchNet(
            n_atom_basis=8,
            n_interactions=1,
            radial_basis=spk.nn.GaussianRBF(n_rbf=4, cutoff=5.0),
            cutoff_fn=spk.nn.CosineCutoff(5.0),
        ),
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=8, output_key="dipole_norm")],
    )
    torch.save(model, tmp_path / "best_model")
    code = main(
        [
            str(tmp_path / "best_model"),
            str(reactive_set_path()),
            "--energy-unit",
            "eV",
            "-o",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no energy output 'energy'" in err
    assert str(tmp_path / "best_model") in err


def test_models_and_data_are_told_apart(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "best_model").write_bytes(b"")
    data = str(tmp_path / "d.h5")
    assert split_models_and_data([str(run), data], None) == ([str(run)], [data])
    assert split_models_and_data([data], [str(run), str(run)]) == (
        [str(run), str(run)],
        [data],
    )
    assert split_models_and_data([], [str(run), "m.pt", data]) == (
        [str(run), "m.pt"],
        [data],
    )
    with pytest.raises(EvaluationError, match="no data file"):
        split_models_and_data([str(run)], None)


def test_output_path_is_checked_before_anything_is_loaded(tmp_path, capsys):
    existing = tmp_path / "report.txt"
    existing.write_text("an earlier result")
    model, data = tmp_path / "model.pt", tmp_path / "data.h5"  # neither exists
    assert main([str(model), str(data), "-o", str(existing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"spkhess-eval: error: -o {existing}: is an existing file; -o needs a "
        "directory"
    )
    assert existing.read_text() == "an earlier result"


def test_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch):
    import schnetpack_hessian.cli.eval as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_structures", interrupted)
    model, data = tmp_path / "model.pt", tmp_path / "data.h5"
    assert main([str(model), str(data), "-o", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip() == (
        "spkhess-eval: interrupted; partial outputs removed"
    )


def test_full_disk_while_writing_leaves_no_half_report(runs, capsys, monkeypatch):
    """Every output file or none: the report written last fails, nothing lands in -o."""
    import errno

    import schnetpack_hessian.cli.eval as cli

    root, data = runs

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cli, "write_report_md", full_disk)
    out = root / "full_disk"
    argv = [str(root / "runs/efh"), str(data), "-o", str(out), "--no-progress"]
    assert main(argv + ["--skip-ts-search", "--kinds", "ts"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"spkhess-eval: error: {out / 'report.md'}: no space left on device"
    assert not out.exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".full_disk")]
