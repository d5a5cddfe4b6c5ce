"""Children stopped with their parent, signals as sentences (processes.py)."""

import signal
import subprocess
import sys

import pytest

from schnetpack_hessian.files import OutputPathError
from schnetpack_hessian.processes import Interrupted, run_child, run_cli
from schnetpack_hessian.testing import alive, descendants, wait_until

_PARENT = """
import sys
from schnetpack_hessian.processes import run_child, run_cli
script = "sleep 1000 & exec sleep 1000"
sys.exit(run_cli("demo", lambda: run_child(["sh", "-c", script]).returncode))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_child_and_its_group(sig):
    proc = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_until(lambda: len(descendants(proc.pid)) >= 2, 30)
        children = descendants(proc.pid)
        proc.send_signal(sig)
        assert proc.wait(20) == 128 + sig
        assert wait_until(lambda: not any(map(alive, children)), 5)
        assert proc.stderr.read().strip() == (
            f"demo: interrupted ({sig.name}); child processes were stopped and "
            "partial outputs removed"
        )
    finally:
        proc.kill()


def test_run_child_returns_the_exit_code():
    assert run_child(["sh", "-c", "exit 3"]).returncode == 3


def test_run_cli_sentences(capsys):
    def raises(err):
        def body():
            raise err

        return body

    assert run_cli("demo", lambda: None) == 0
    assert run_cli("demo", raises(KeyboardInterrupt())) == 130
    assert run_cli("demo", raises(Interrupted(signal.SIGTERM))) == 143
    assert run_cli("demo", raises(OutputPathError("-o x: bad")), error_code=2) == 2
    assert run_cli("demo", raises(OSError(28, "No space left on device", "x"))) == 1
    assert run_cli("demo", raises(ValueError("no such arm")), (ValueError,)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "demo: interrupted; partial outputs removed",
        "demo: interrupted (SIGTERM); child processes were stopped and partial "
        "outputs removed",
        "demo: error: -o x: bad",
        "demo: error: x: no space left on device",
        "demo: error: no such arm",
    ]
    with pytest.raises(RuntimeError):  # a bug stays a traceback
        run_cli("demo", raises(RuntimeError("bug")))
