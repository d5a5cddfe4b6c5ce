"""spkhess-bench --check: the device check, in its CI-sized form on the CPU."""

import json

import pytest
import torch

import schnetpack_hessian.devicecheck as devicecheck
from schnetpack_hessian.cli.bench import main

CHECKS = {
    "finite_differences",
    "memory_bound",
    "training_full",
    "training_hvp",
    "training_rows",
    "ddp",
}


def test_check_on_cpu_passes_and_writes_its_report(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert main(["--check", "--quick", "--device", "cpu", "--json", str(out)]) == 0
    assert "device check on cpu: passed" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["passed"] is True
    assert (report["device"], report["size"]) == ("cpu", "ci")
    assert report["dimensions"]["steps"] == 2 and report["environment"]["torch"]
    checks = report["checks"]
    assert set(checks) == CHECKS
    assert {name: c["status"] for name, c in checks.items()} == {
        **{name: "pass" for name in CHECKS},
        "ddp": "skip",
    }
    assert "two CUDA devices" in checks["ddp"]["reason"]
    fd = checks["finite_differences"]
    assert 0 < fd["relative_error"] < fd["tolerance"] == 1e-6
    assert fd["n_atoms"] == [3, 5]
    memory = checks["memory_bound"]
    assert max(memory["max_relative_difference"].values()) < 1e-9
    assert memory["recomputing_backward_used"] == {
        "keep": False,
        "recompute": True,
        "split": True,
    }
    for mode in ("full", "hvp", "rows"):
        training = checks[f"training_{mode}"]
        assert training["ms_per_step"] > 0 and training["steps_timed"] == 2
        assert training["peak_mem_mb"] > 50
        assert training["peak_mem_kind"] == "process_peak_rss"
        syncs = training["host_syncs"]
        assert syncs["from_this_package"] == 0
        assert syncs["deliberate"]["non-finite loss guard"] == 1
        # SchNetPack's Atomwise reads the number of molecules on the host
        assert list(syncs["calls"]) == [
            "schnetpack: int (__int__) at atomwise.py:80 in forward"
        ]
    assert all(c["seconds"] > 0 for c in checks.values())


def test_a_failing_or_crashing_check_fails_the_command(tmp_path, monkeypatch):
    """Every check runs and reports; one failure makes the exit code 1."""

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access")

    passing = lambda *args, **kwargs: {"status": "pass"}  # noqa: E731
    for name in ("check_memory_bound", "check_training", "check_ddp"):
        monkeypatch.setattr(devicecheck, name, passing)
    monkeypatch.setattr(devicecheck, "check_finite_differences", crash)
    out = tmp_path / "check.json"
    assert main(["--check", "--quick", "--device", "cpu", "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["passed"] is False
    assert report["checks"]["finite_differences"] == {
        "status": "fail",
        "reason": "RuntimeError: CUDA error: an illegal memory access",
        "seconds": report["checks"]["finite_differences"]["seconds"],
    }
    assert report["checks"]["training_rows"]["status"] == "pass"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_one_sentence():
    with pytest.raises(SystemExit, match="--device cuda: no CUDA device found"):
        main(["--check", "--device", "cuda"])


@pytest.mark.integration
def test_the_ddp_check_compares_two_ranks_with_one_process():
    """The DDP check's code, with gloo on two CPU processes."""
    result = devicecheck.check_ddp(torch.device("cpu"), allow_cpu=True)
    assert result["status"] == "pass", result
    assert result["backend"] == "gloo" and result["max_relative_difference"] < 1e-9
