"""Child processes and signals: SIGTERM and Ctrl-C stop every child, then say so.

- :func:`handle_signals`: SIGTERM and SIGINT raise :class:`Interrupted` in the main
  thread, so ``with`` blocks unwind (temporary files removed, children stopped).
- :func:`run_child`: a subprocess in its own process group, stopped with its whole
  group when the caller is interrupted or fails, and sent SIGTERM by the kernel if
  the caller dies without clean-up (SIGKILL).
- :func:`die_with_parent`: the same kernel request for pool workers.
- :func:`stopping_pool`: the worker processes of a ``ProcessPoolExecutor`` stopped
  when the block fails or is interrupted (``shutdown`` alone waits for them).
- :func:`run_cli`: the body of every console script: one sentence instead of a
  traceback for interruptions, output problems and write errors.

Standard library only: ``spkhess-generate`` must not import torch at start-up.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Optional, Sequence, Tuple, Type

from schnetpack_hessian.files import OutputPathError, write_problem

__all__ = [
    "Interrupted",
    "die_with_parent",
    "handle_signals",
    "run_child",
    "stop_group",
    "stopping_pool",
    "run_cli",
]

#: Seconds a child gets to stop after SIGTERM before it is killed.
STOP_GRACE = 10.0


class Interrupted(KeyboardInterrupt):
    """The process received SIGTERM or SIGINT (a ``KeyboardInterrupt``, so that
    ``except Exception`` does not swallow it).

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame) -> None:
    # a second signal must not interrupt the clean-up of the first
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`Interrupted` while the block runs (main
    thread only; elsewhere the block runs unchanged).  The old handlers come back
    afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """Have Linux send ``sig`` to this process when its parent ``parent`` dies, even
    by SIGKILL (``prctl(PR_SET_PDEATHSIG)``; nothing elsewhere).  Call it first thing
    in a child; if ``parent`` is already gone the signal comes at once."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def stop_group(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL after ``grace`` seconds, and
    wait for ``proc``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # grandchildren that outlived it


def run_child(
    cmd: Sequence[str], grace: float = STOP_GRACE, **popen_kwargs
) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose child (and all its descendants) stops with us.

    The child runs in its own session and process group: Ctrl-C at a terminal
    reaches only this process, which then stops the group (SIGTERM, SIGKILL after
    ``grace`` seconds) and waits for it before re-raising.  If this process is
    killed outright, the kernel sends the child SIGTERM (:func:`die_with_parent`).

    Returns:
        The finished process (``returncode``; output as ``popen_kwargs`` direct).
    """
    parent = os.getpid()
    with subprocess.Popen(
        list(cmd),
        start_new_session=True,
        preexec_fn=lambda: die_with_parent(parent),
        **popen_kwargs,
    ) as proc:
        try:
            proc.wait()
        except BaseException:
            stop_group(proc, grace)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode)


@contextlib.contextmanager
def stopping_pool(pool: ProcessPoolExecutor) -> Iterator[ProcessPoolExecutor]:
    """Terminate ``pool``'s worker processes (SIGTERM, then SIGKILL) if the block
    raises, so that leaving the executor does not wait for their computations."""
    try:
        yield pool
    except BaseException:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(STOP_GRACE)
            if worker.is_alive():
                worker.kill()
                worker.join()
        raise


def run_cli(
    prog: str,
    body: Callable[[], Optional[int]],
    errors: Tuple[Type[BaseException], ...] = (),
    error_code: int = 1,
) -> int:
    """Run a console script's ``body`` with signals handled; returns the exit code.

    - SIGTERM / Ctrl-C: ``"<prog>: interrupted (SIGTERM); ..."`` and 128 + signal
      (130 for Ctrl-C), after child processes are stopped and partial outputs
      removed by the ``with`` blocks they unwound;
    - ``errors`` (the command's own), an output path refused before the work
      (:class:`~schnetpack_hessian.files.OutputPathError`), an existing or busy
      output: ``"<prog>: error: <message>"`` and ``error_code``;
    - a write that failed (full disk, read-only or unwritable directory):
      ``"<prog>: error: <file>: <problem>"`` and 1.

    Args:
        prog: the command's name.
        body: parses nothing, runs the command (returns its exit code or None).
        errors: exception types whose message is the whole story.
        error_code: exit code of those.
    """
    try:
        with handle_signals():
            code = body()
    except Interrupted as err:
        print(
            f"{prog}: interrupted ({signal.Signals(err.signum).name}); child processes "
            "were stopped and partial outputs removed",
            file=sys.stderr,
        )
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; partial outputs removed", file=sys.stderr)
        return 128 + signal.SIGINT
    except (*errors, OutputPathError, FileExistsError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return error_code
    except OSError as err:
        print(f"{prog}: error: {write_problem(err)}", file=sys.stderr)
        return 1
    return 0 if code is None else int(code)
