"""Output claims, output-path checks and the free-space guard (files.py)."""

import errno
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from schnetpack_hessian.files import (
    OutputBusyError,
    OutputPathError,
    check_output,
    claim_output,
    claim_path,
    require_space,
    write_problem,
)
from schnetpack_hessian.testing import claim_elsewhere, wait_until


def test_a_second_writer_is_refused_and_claims_nest_in_one_process(tmp_path):
    out = tmp_path / "out.h5"
    proc = claim_elsewhere(out)
    try:
        with pytest.raises(OutputBusyError, match=f"process {proc.pid} "):
            with claim_output(out):
                pass
    finally:
        proc.kill()
        proc.wait()
    with claim_output(out):  # the kernel dropped the killed holder's lock
        with claim_output(out):  # e.g. generate run --out, then its writer
            assert claim_path(out).exists()
        proc = subprocess.Popen([sys.executable, "-c", _TRY_CLAIM, str(out)])
        assert proc.wait(60) == 3  # still held after the inner claim ended
    assert not claim_path(out).exists()


_TRY_CLAIM = """
import sys
from schnetpack_hessian.files import OutputBusyError, claim_output
try:
    with claim_output(sys.argv[1]):
        pass
except OutputBusyError:
    sys.exit(3)
"""


def test_two_conversions_at_once_give_one_output(tmp_path):
    """Both exited 0 before and the later silently replaced the earlier."""
    from schnetpack_hessian.datasets import reactive_set_path

    out = tmp_path / "out.h5"
    cmd = [sys.executable, "-m", "schnetpack_hessian.cli.convert"]
    procs = [
        subprocess.Popen(
            cmd + [str(reactive_set_path()), "-o", str(out), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        for _ in range(2)
    ]
    codes = [p.wait(300) for p in procs]
    errors = [p.stderr.read().strip() for p in procs]
    assert sorted(codes) == [0, 1], errors
    refused = errors[codes.index(1)].splitlines()[-1]
    assert refused.startswith(f"spkhess-convert: error: {out}")
    assert "is writing it" in refused or "exists" in refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_check_output(tmp_path):
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    assert check_output(tmp_path / "new" / "x.h5", "-o", (".h5",)).name == "x.h5"
    cases = [
        (dict(path="x.xyz", suffixes=(".h5", ".db")), "expected a .h5 or .db file"),
        (dict(path="file", directory=True), "is an existing file; -o needs a dir"),
        (dict(path="dir"), "is a directory; -o needs a file"),
        (dict(path="file/x.h5"), "is not a directory"),
        (dict(path="new/x.h5", mkdir=False), "does not exist; create it first"),
    ]
    for kwargs, problem in cases:
        path = tmp_path / kwargs.pop("path")
        with pytest.raises(OutputPathError, match=problem):
            check_output(path, "-o", **kwargs)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        check_output(tmp_path / "file", "-o", overwrite=False)


def test_require_space_and_write_problem(tmp_path, monkeypatch):
    require_space(tmp_path / "x.h5", 1)
    monkeypatch.setattr(
        os, "statvfs", lambda p: SimpleNamespace(f_bavail=1, f_frsize=4096)
    )
    with pytest.raises(OSError) as err:
        require_space(tmp_path / "x.h5", 10**6)
    assert err.value.errno == errno.ENOSPC
    assert write_problem(err.value).startswith(f"{tmp_path / 'x.h5'}: no space left")
    plain = OSError(errno.EROFS, "Read-only file system")
    assert write_problem(plain, "out.db") == "out.db: read-only file system"


def test_a_killed_holder_leaves_a_free_claim(tmp_path):
    out = tmp_path / "out.db"
    proc = claim_elsewhere(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert claim_path(out).exists()  # left behind, but not held
    assert wait_until(lambda: _free(out), 5)


def _free(out) -> bool:
    try:
        with claim_output(out):
            return True
    except OutputBusyError:
        return False
