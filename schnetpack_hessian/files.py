"""Output files: claimed when a command starts, checked before the work, never half.

- :func:`exclusive_lock` / :func:`claim_output`: an exclusive claim on a path for the
  duration of a write or a training; a second writer (another process, or this one)
  is refused at once instead of silently replacing the first one's result.
- :func:`check_output`: an output path checked before a long computation starts
  (suffix, file or directory, writable parent), so a bad path costs nothing.
- :func:`require_space`: refuse a write the disk cannot hold before a library
  (HDF5 crashes on a full disk) meets the full disk itself.
- :func:`write_problem`: an ``OSError`` of a write as one sentence naming the file.
- :func:`atomic_write_bytes`: a small file written whole or not at all (training
  files have :func:`schnetpack_hessian.data.io.atomic_output`, which also claims).
- :func:`staged_directory`: the files of a report directory written whole or not at
  all (into a hidden staging folder beside it, moved in once every file is written).

Standard library only: ``spkhess-generate`` must not import torch at start-up.
"""

import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Union

__all__ = [
    "file_sha256",
    "DB_SUFFIXES",
    "H5_SUFFIXES",
    "TRAINING_SUFFIXES",
    "OutputBusyError",
    "OutputPathError",
    "exclusive_lock",
    "claim_output",
    "claim_path",
    "check_output",
    "require_space",
    "write_problem",
    "atomic_write_bytes",
    "staged_directory",
]

PathLike = Union[str, os.PathLike]

#: Suffixes of training files: ASE/SchNetPack SQLite and HDF5.
DB_SUFFIXES = (".db",)
H5_SUFFIXES = (".h5", ".hdf5")
TRAINING_SUFFIXES = H5_SUFFIXES + DB_SUFFIXES

#: Free space kept in reserve beyond the bytes a write needs (file metadata, B-trees).
SPACE_RESERVE = 8 * 1024**2


class OutputBusyError(FileExistsError):
    """Another process (or another writer in this one) holds the output's claim."""


class OutputPathError(ValueError):
    """An output path that cannot be written (wrong suffix, kind or directory)."""


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    # a child given the descriptor holds the lock after its parent is gone
    return f"process {pid} (or a child of it)" if pid.isdigit() else "a process"


@contextlib.contextmanager
def exclusive_lock(
    path: PathLike, what: str, doing: str = "is writing it"
) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created, holding our pid) while the
    block runs; removed afterwards.

    The lock belongs to the open file, not the process: a child started with the
    yielded descriptor in ``pass_fds`` keeps holding it if this process dies, so
    nobody else starts the same work while that child runs.  A lock left by a
    killed process is free again (the kernel drops it with the last descriptor).

    Args:
        path: the lock file.
        what: what the lock protects, for the error (e.g. ``"out.h5"``).
        doing: what its holder does, for the error.

    Yields:
        The lock file's descriptor.

    Raises:
        OutputBusyError: the lock is held (the holder's pid named).
    """
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(
                f"{what}: {_holder(path)} {doing} (lock {path}); wait for it to "
                "finish or stop it"
            ) from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:  # else its holder removed it between our open and flock
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def claim_path(path: PathLike) -> Path:
    """``.<name>.lock`` beside ``path``: the claim of :func:`claim_output`."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def claim_output(path: PathLike) -> Iterator[None]:
    """Claim the output ``path`` while the block runs (see :func:`exclusive_lock`);
    another process's writer is refused with :class:`OutputBusyError`.

    Claims nest within a process: a command that claims its output when it starts
    (``spkhess-generate run --out``, before hours of computation) writes it later
    through :func:`~schnetpack_hessian.data.io.atomic_output`, which claims again.
    """
    key = os.path.abspath(claim_path(path))
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    with exclusive_lock(key, str(path)):
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]


#: Claims this process holds (claim file → nesting depth).
_HELD: Dict[str, int] = {}


def _existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def check_output(
    path: PathLike,
    option: str,
    suffixes: Sequence[str] = (),
    directory: bool = False,
    overwrite: bool = True,
    mkdir: bool = True,
) -> Path:
    """Check an output path before any work is done.

    Args:
        path: the output.
        option: how the user gave it (e.g. ``"--json"``), named in errors.
        suffixes: accepted suffixes of a file output (lower case, with the dot).
        directory: the output is a directory (an existing file is an error).
        overwrite: an existing output may be replaced (else an error).
        mkdir: a missing parent directory may be created (else an error).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputPathError: wrong suffix, a file where a directory is needed (or the
            reverse), a missing or unwritable directory.
        FileExistsError: the output exists and ``overwrite`` is False.
    """
    path = Path(path)
    where = f"{option} {path}"
    if path.exists():
        if directory and not path.is_dir():
            raise OutputPathError(
                f"{where}: is an existing file; {option} needs a directory"
            )
        if not directory and path.is_dir():
            raise OutputPathError(f"{where}: is a directory; {option} needs a file")
        if not overwrite:
            raise FileExistsError(f"{where}: exists; pass --overwrite to replace it")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputPathError(
            f"{where}: expected a {' or '.join(suffixes)} file, not "
            f"{repr(path.suffix) if path.suffix else 'a name without suffix'}"
        )
    target = path if directory and path.is_dir() else path.parent
    if not target.is_dir():
        if target.exists():
            raise OutputPathError(f"{where}: {target} is not a directory")
        if not mkdir:
            raise OutputPathError(
                f"{where}: the directory {target} does not exist; create it first"
            )
        target = _existing_ancestor(target)
        if not target.is_dir():
            raise OutputPathError(f"{where}: {target} is not a directory")
    if not os.access(target, os.W_OK | os.X_OK):
        raise OutputPathError(f"{where}: the directory {target} is not writable")
    return path


def require_space(path: PathLike, nbytes: int) -> None:
    """Raise ``OSError(ENOSPC)`` if the file system of ``path`` has less than
    ``nbytes`` plus :data:`SPACE_RESERVE` free.

    HDF5 cannot recover from a full disk (the library crashes when the file is
    closed), so the HDF5 writer asks before every write.
    """
    stat = os.statvfs(Path(path).parent)
    free = stat.f_bavail * stat.f_frsize
    if free < nbytes + SPACE_RESERVE:
        raise OSError(
            errno.ENOSPC,
            f"no space left on device (a write of {nbytes / 1e6:.1f} MB needs "
            f"{(nbytes + SPACE_RESERVE) / 1e6:.1f} MB free, {free / 1e6:.1f} MB left)",
            str(path),
        )


_PROBLEMS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def write_problem(err: OSError, output: Optional[PathLike] = None) -> str:
    """``"<file>: <problem>"`` for an ``OSError`` (the file from the error, else
    ``output``)."""
    name = err.filename if err.filename is not None else output
    problem = _PROBLEMS.get(err.errno) if err.strerror is None else err.strerror
    problem = problem or str(err)
    lead = f"{name}: " if name is not None else ""
    return f"{lead}{problem[0].lower()}{problem[1:]}" if problem else lead


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file's content as hex, read in 4 MiB blocks (~0.1 s for 30 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (a missing
    parent directory is created); on any error nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_directory(out: PathLike) -> Iterator[Path]:
    """A staging folder for the files of directory ``out``: write them there; when the
    block ends without error each is moved into ``out`` (created if needed; files of
    the same name replaced), and on any error the staging folder is removed, so ``out``
    never holds half a report.

    Yields:
        The staging folder (``.<name>.partial-<pid>`` beside ``out``).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for item in sorted(stage.iterdir()):
            os.replace(item, out / item.name)
    except OSError as err:  # name the output's file, not the staging folder's
        if err.filename and Path(err.filename).parent == stage:
            err.filename = str(out / Path(err.filename).name)
        raise
    finally:
        if stage.exists():
            for item in stage.iterdir():
                item.unlink()
            stage.rmdir()
