"""The study's spktrain child: stopped with the study, never two in one run directory
(a fake spktrain stands in for the real one, so these run in seconds)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from schnetpack_hessian.study.runner import StudyError, train_run
from schnetpack_hessian.testing import alive, descendants, wait_until

#: A spktrain that trains for ever, with a grandchild, and counts its starts.
_FAKE_SPKTRAIN = """#!/bin/sh
echo started >> "$0.starts"
sleep 1000 &
exec sleep 1000
"""

#: ``train_run`` in a console script, with the fake spktrain beside "python".
_STUDY = """
import sys
from pathlib import Path

fake_python, run_dir = sys.argv[1:]
sys.executable = fake_python
from schnetpack_hessian.processes import run_cli
from schnetpack_hessian.study.runner import train_run

run_dir = Path(run_dir)
sys.exit(run_cli("spkhess-study", lambda: train_run([], run_dir, run_dir, 1)))
"""


@pytest.fixture
def fake_python(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    spktrain = bin_dir / "spktrain"
    spktrain.write_text(_FAKE_SPKTRAIN)
    spktrain.chmod(0o755)
    return bin_dir / "python"


def _start_study(fake_python: Path, run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _STUDY, str(fake_python), str(run_dir)],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    # spktrain and its grandchild
    assert wait_until(lambda: len(descendants(proc.pid)) >= 2, 120)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_study_stops_spktrain_and_its_children(
    tmp_path, fake_python, sig
):
    run_dir = tmp_path / "runs" / "arm"
    proc = _start_study(fake_python, run_dir)
    children = descendants(proc.pid)
    try:
        proc.send_signal(sig)
        assert proc.wait(30) == 128 + sig
        assert wait_until(lambda: not any(map(alive, children)), 5), children
        last = proc.stderr.read().strip().splitlines()[-1]
        assert last.startswith(f"spkhess-study: interrupted ({sig.name})")
        assert not (run_dir / "spktrain.lock").exists()
    finally:
        proc.kill()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_no_second_spktrain_while_an_orphan_trains(tmp_path, fake_python, monkeypatch):
    """A study killed with SIGKILL cannot stop its spktrain: the kernel sends it
    SIGTERM; whatever of it survives (here a grandchild) still holds the run
    directory, and a rerun does not start a second trainer there."""
    run_dir = tmp_path / "runs" / "arm"
    proc = _start_study(fake_python, run_dir)
    orphans = descendants(proc.pid)
    try:
        proc.kill()
        proc.wait(10)
        # spktrain itself got SIGTERM from the kernel; its background child lives on
        assert wait_until(lambda: sum(map(alive, orphans)) == 1, 5), orphans
        monkeypatch.setattr(sys, "executable", str(fake_python))
        with pytest.raises(StudyError, match=f"{run_dir}: process .* is training in"):
            train_run([], run_dir, run_dir, 1)
        starts = Path(str(fake_python.with_name("spktrain")) + ".starts")
        assert starts.read_text().splitlines() == ["started"]
    finally:
        for pid in orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    # once the orphan is gone the run directory is free again
    assert wait_until(lambda: not any(map(alive, orphans)), 5)
    fake_python.with_name("spktrain").write_text("#!/bin/sh\nexit 1\n")
    with pytest.raises(StudyError, match="spktrain failed for arm \\(exit 1\\)"):
        train_run([], run_dir, run_dir, 1)


#: A spktrain that computes for a moment and fails (no best_model).
_BUSY_SPKTRAIN = """#!/bin/sh
i=0
while [ $i -lt 300000 ]; do i=$((i+1)); done
exit 3
"""


def test_every_spktrain_process_of_a_run_is_costed(tmp_path, monkeypatch):
    """The CPU and wall time of each spktrain process (start-up, validation and all)
    are appended to the run's record, also when it fails; the run's cost sums them."""
    import json

    from schnetpack_hessian.study import runner

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "spktrain").write_text(_BUSY_SPKTRAIN)
    (bin_dir / "spktrain").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    run_dir = tmp_path / "run"
    for _ in range(2):
        with pytest.raises(StudyError, match="exit 3"):
            train_run([], run_dir, tmp_path, 1)
    segments = json.loads((run_dir / runner.PROCESS_COST_FILE).read_text())
    assert len(segments) == 2
    for segment in segments:
        assert segment["cpu_seconds"] > 0.05
        assert segment["wall_seconds"] >= 0.5 * segment["cpu_seconds"]
    cost = runner._cost(run_dir)
    assert cost["train_cpu_seconds"] == pytest.approx(
        sum(s["cpu_seconds"] for s in segments)
    )
