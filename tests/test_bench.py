"""Smoke test of spkhess-bench (speed targets live in the benchmark, not in tests)."""

import json
import math

import pytest
import torch

from schnetpack_hessian.bench import (
    BenchConfig,
    benchmark_molecules,
    environment,
    run_in_subprocess,
    time_inference,
    time_training_step,
)

TINY = dict(features=8, interactions=1, n_molecules=2, repeats=1, warmup=0)


@pytest.mark.parametrize(
    "kind,extra",
    [("ef", {}), ("hvp", {"n_probes": 2}), ("rows", {"n_probes": 2}), ("full", {"chunk_size": 4}),
     ("full", {"memory_efficient": False}), ("response", {})],
)  # fmt: skip
def test_every_training_configuration_trains(kind, extra):
    """Each configuration's step has a finite loss and moves the parameters."""
    result = time_training_step(BenchConfig(kind=kind, **TINY, **extra))
    assert math.isfinite(result["loss"]) and result["loss"] > 0
    assert math.isfinite(result["grad_norm"]) and result["grad_norm"] > 0
    assert result["n_atoms_total"] == sum(len(m) for m in benchmark_molecules(2))


def test_a_training_step_records_the_memory_of_its_device():
    """On a CPU the peak is the process's RSS, and the record says so."""
    result = time_training_step(BenchConfig(**TINY))
    assert result["peak_mem_kind"] == "process_peak_rss"
    assert result["peak_mem_device"] == "cpu"
    assert result["peak_mem_mb"] > 0 and result["step_mem_mb"] >= 0
    assert environment("cpu")["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_a_bench_on_the_last_cuda_device_reads_that_device():
    """On cuda:K the peak, the synchronisation and the device name are cuda:K's (with
    two GPUs the bench read cuda:0, where nothing was allocated)."""
    last = torch.device("cuda", torch.cuda.device_count() - 1)
    result = time_training_step(BenchConfig(device=str(last), **TINY))
    assert result["peak_mem_kind"] == "cuda_allocated"
    assert result["peak_mem_device"] == str(last)
    assert result["peak_mem_mb"] > 0
    assert environment(last)["cuda_device"] == torch.cuda.get_device_name(last)


@pytest.mark.parametrize("kind", ["full", "response"])
def test_inference_counts_hessians_per_second(kind):
    result = time_inference(BenchConfig(kind=kind, **TINY))
    assert result["hessians_per_s"] == pytest.approx(2 / result["batch_s"])


def test_full_hessian_step_needs_more_memory_than_ef_in_its_own_process():
    """Each measurement runs in a fresh process, so the peaks are comparable: keeping
    the second-order graphs of 4 molecules costs tens of MiB over an E+F step."""
    size = dict(features=32, interactions=2, n_molecules=4, repeats=1, warmup=0)
    ef = run_in_subprocess(BenchConfig(kind="ef", **size))
    full = run_in_subprocess(BenchConfig(kind="full", memory_efficient=False, **size))
    assert "error" not in ef and "error" not in full, (ef, full)
    assert full["peak_mem_mb"] > ef["peak_mem_mb"] + 10
    assert full["step_mem_mb"] > 2 * ef["step_mem_mb"]


@pytest.mark.parametrize("n_atoms", [5, 8, 10, 20, 30])
def test_sized_molecules_have_the_requested_atom_count(n_atoms):
    mols = benchmark_molecules(3, n_atoms)
    assert [len(m) for m in mols] == [n_atoms] * 3
    assert (
        min(m.get_all_distances()[m.get_all_distances() > 0].min() for m in mols) > 0.8
    )


def test_cli_writes_json_with_the_ratios(tmp_path, monkeypatch):
    import schnetpack_hessian.bench as bench
    from schnetpack_hessian.cli.bench import main

    monkeypatch.setattr(bench, "BenchConfig", _tiny_config(bench.BenchConfig))
    # the memory runs in this process: that each measures in a fresh one is
    # test_full_hessian_step_needs_more_memory_than_ef_in_its_own_process's
    monkeypatch.setattr(
        bench, "run_in_subprocess", lambda cfg, what: bench.time_training_step(cfg)
    )
    out = tmp_path / "missing" / "dir" / "bench.json"  # created at the end
    assert main(["--quick", "--json", str(out), "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert set(report["ratios"]) == {
        "hvp1_vs_ef", "full_vs_ef", "response_vs_full", "full_infer_vs_response", "mem_full_vs_ef"
    }  # fmt: skip
    assert all(v is not None and v > 0 for v in report["ratios"].values())
    assert report["environment"]["torch"]


def _tiny_config(cls):
    """BenchConfig with a tiny model and batch, timed once, for the CLI smoke test."""

    def make(**kwargs):
        kwargs.update(features=8, interactions=1, repeats=1, warmup=0, min_time=0.0)
        kwargs["n_molecules"] = min(kwargs.get("n_molecules", 16), 3)
        return cls(**kwargs)

    return make


@pytest.mark.parametrize(
    "where, problem",
    [
        ("x.txt", "expected a .json file, not '.txt'"),
        ("folder", "is a directory; --json needs a file"),
        ("file/x.json", "is not a directory"),
    ],
)
def test_cli_refuses_a_bad_json_path_before_benchmarking(
    tmp_path, monkeypatch, capsys, where, problem
):
    import schnetpack_hessian.bench as bench
    from schnetpack_hessian.cli.bench import main

    monkeypatch.setattr(bench, "run_suite", lambda *a, **k: 1 / 0)  # never reached
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    out = tmp_path / where
    assert main(["--quick", "--json", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"spkhess-bench: error: --json {out}: ")
    assert problem in err and "\n" not in err


def test_cli_refuses_an_unwritable_json_directory(tmp_path, monkeypatch, capsys):
    import os

    import schnetpack_hessian.bench as bench
    from schnetpack_hessian.cli.bench import main

    monkeypatch.setattr(bench, "run_suite", lambda *a, **k: 1 / 0)  # never reached
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    out = tmp_path / "missing" / "x.json"
    assert main(["--quick", "--json", str(out), "--device", "cpu"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"spkhess-bench: error: --json {out}: the directory {tmp_path} is not "
        "writable"
    )


def test_cli_ctrl_c_is_one_line(tmp_path, monkeypatch, capsys):
    import schnetpack_hessian.bench as bench
    from schnetpack_hessian.cli.bench import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_suite", interrupted)
    out = tmp_path / "bench.json"
    assert main(["--quick", "--json", str(out), "--device", "cpu"]) == 130
    assert capsys.readouterr().err.strip() == (
        "spkhess-bench: interrupted; partial outputs removed"
    )
    assert list(tmp_path.iterdir()) == []
