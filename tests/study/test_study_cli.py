"""spkhess-study end to end, CI-sized: two tiny runs, the report, no retraining."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schnetpack_hessian.cli.study import main
from schnetpack_hessian.data import iread
from schnetpack_hessian.datasets import reactive_set_path

pytestmark = pytest.mark.integration

ARMS = ["EF-painn-100pct", "EFH-full-painn-100pct"]
TINY = [
    "--data", "shipped", "--quick", "--replicates", "1", "--arms", *ARMS,
    "--max-epochs", "2", "--n-atom-basis", "8", "--n-interactions", "1",
]  # fmt: skip


def _study(out: Path, *extra: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("spkhess-study")
    return subprocess.run(
        [str(exe), *TINY, *extra, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def _mtimes(out: Path):
    return {
        p.relative_to(out): p.stat().st_mtime_ns
        for name in ("result.json", "best_model", "spktrain.log")
        for p in out.glob(f"runs/*/{name}")
    }


def test_two_tiny_runs_report_and_resume(tmp_path, capsys):
    reactions = {int(a.info["reaction"]) for a in iread(reactive_set_path())}
    n_reactions = len(reactions)
    out = tmp_path / "study"
    first = _study(out)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-2000:]
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == [f"{a}-s1-k0" for a in ARMS]
    for run in runs:
        record = json.loads((out / "runs" / run / "result.json").read_text())
        assert record["cost"]["n_epochs"] == 2
        assert all(s > 0 for s in record["cost"]["epoch_seconds"])
        assert record["cost"]["peak_rss_mb"] > 50
        for test_set in ("train_offpath", "heldout"):
            metrics = record["metrics"][test_set]
            assert metrics["n_structures"] > 0
            assert metrics["energy_mae"] > 0 and metrics["hessian_mae"] > 0
        # nothing of the held-out reactions was trained or validated on
        split = json.loads(json.dumps(record["heldout_reactions"]))
        assert len(split) in (n_reactions // 2, n_reactions - n_reactions // 2)
        assert set(split) <= reactions  # one of 2 by-reaction folds
    report = (out / "RESULTS.md").read_text()
    assert "spkhess-study --data shipped --quick" in report
    assert "EFH-full-painn-100pct" in report and "Hessian MAE −70 %" in report
    assert "complete: 2 of 2 runs" in report
    assert report.count("Zero-force predictor") == 2  # under both accuracy tables
    assert (out / "figures" / "bars_hessian_mae.png").stat().st_size > 1000
    assert (out / "figures" / "learning_curves.png").exists()

    # a rerun trains and scores nothing (in this process: the console script's
    # start-up was tested above)
    before = _mtimes(out)
    assert main([*TINY, "-o", str(out)]) == 0
    assert _mtimes(out) == before

    # (scoring a trained run without retraining it: the cpu-preset test below)

    # another budget in the same directory would mix runs: refused
    victim = out / "runs" / runs[1]
    model_time = (victim / "best_model").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*TINY, "--max-epochs", "3", "-o", str(out)]) == 2
    assert "new output directory" in capsys.readouterr().err
    assert (victim / "best_model").stat().st_mtime_ns == model_time


def test_missing_xtb_set_is_a_clear_error(tmp_path, capsys, monkeypatch):
    def not_installed(level="wb97x"):
        raise FileNotFoundError(
            f"the reactive set ({level}) is not in this installation"
        )

    # an installation without the bulk file (this checkout may have one)
    monkeypatch.setattr("schnetpack_hessian.cli.study.reactive_set_path", not_installed)
    assert main(["--data", "xtb", "--quick", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--data xtb" in err and "not installed" in err
    assert not (tmp_path / "runs").exists()


def test_unknown_arm_is_a_clear_error(tmp_path, capsys):
    assert main(["--quick", "--arms", "EX-painn", "-o", str(tmp_path)]) == 2
    assert "EX-painn" in capsys.readouterr().err


def test_budget_options_reach_the_plan():
    from schnetpack_hessian.cli.study import build_parser, make_plan

    def plan(*argv):
        args = build_parser().parse_args(["--full", "-o", "x", *argv])
        return make_plan(args)

    default = plan()
    assert default.ts_settings is not None and default.budget.val_per_reaction == 0
    assert default.budget.weight_decay == 0.0 and default.budget.gradient_clip == 0.0
    changed = plan(
        "--no-ts-search", "--val-per-reaction", "1", "--weight-decay", "0.01"
    )
    assert changed.ts_settings is None and changed.budget.val_per_reaction == 1
    assert changed.budget.weight_decay == 0.01 and changed.budget.gradient_clip == 0.0


def test_cpu_preset_trains_first_and_scores_a_subsample_later(tmp_path):
    out = tmp_path / "study"
    tiny = [
        "--data", "shipped", "--preset", "cpu", "--replicates", "2",
        "--arms", "EF-painn-100pct", "--max-epochs", "2", "--n-atom-basis", "8",
        "--n-interactions", "1", "--no-ts-search", "--score-per-set", "40",
        "--max-runs", "1", "-o", str(out),
    ]  # fmt: skip  (the preset needs 2 folds; one of its runs is enough here)
    exe = Path(sys.executable).with_name("spkhess-study")
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def study(*extra):
        done = subprocess.run(
            [str(exe), *tiny, *extra], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]

    study("--train-only")
    run = out / "runs" / "EF-painn-100pct-s1-k0"
    assert (run / "best_model").exists() and not (run / "result.json").exists()
    assert not (out / "RESULTS.md").exists()
    model_time = (run / "best_model").stat().st_mtime_ns
    study()
    record = json.loads((run / "result.json").read_text())
    assert (run / "best_model").stat().st_mtime_ns == model_time  # not retrained
    # every critical point (test set b holds the held-out ones) and 40 others
    assert record["n_scored"]["train_offpath"] == 40
    assert 40 < record["n_scored"]["heldout"] < record["n_test"]["heldout"]
    for test_set in ("train_offpath", "heldout"):
        assert record["n_test"][test_set] > 40
        assert record["metrics"][test_set]["n_structures"] == (
            record["n_scored"][test_set]
        )
    assert "EF-painn-100pct" in (out / "RESULTS.md").read_text()


def test_output_that_is_a_file_fails_before_anything_runs(tmp_path, capsys):
    taken = tmp_path / "study"
    taken.write_text("not a directory")
    assert main(["--data", "shipped", "--quick", "-o", str(taken)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"spkhess-study: error: -o {taken}: is an existing file; -o needs a directory"
    )
