"""Reading and writing training files (``.db`` / ``.h5``): atomic, streaming, validated.

:class:`RecordWriter` is the one place where files are written: it validates every
structure, converts it to the storage form and writes into a temporary file in the
output's directory that is renamed onto the output only when everything succeeded.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import h5py
import numpy as np
from ase import Atoms
from ase.db import connect

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.dbfile import DBAppender, read_db_labels
from schnetpack_hessian.data.h5file import (
    H5Appender,
    iter_storage,
    open_h5,
    read_header,
    read_labels,
)
from schnetpack_hessian.data.record import (
    HessianRecord,
    Origin,
    ReactionIds,
    convert_record,
    reaction_names,
    record_from_atoms,
    record_to_atoms,
    validate_record,
)
from schnetpack_hessian.data.storage import (
    base_metadata,
    native_byte_order,
    record_to_storage,
    storage_to_record,
)
from schnetpack_hessian.data.units import ASE_UNITS, check_units, complete_units
from schnetpack_hessian.data.validation import (
    SYMMETRY_RTOL,
    HessianDataError,
    SymmetryReport,
)
from schnetpack_hessian.files import DB_SUFFIXES, H5_SUFFIXES, claim_output

__all__ = [
    "DB_SUFFIXES",
    "H5_SUFFIXES",
    "atomic_output",
    "partial_path",
    "remove_stale_partials",
    "backend_of",
    "RecordWriter",
    "write",
    "write_records",
    "read_records",
    "iread_records",
    "file_reactions",
    "file_units",
    "file_metadata",
    "iread",
    "open_dataset",
]

PathLike = Union[str, os.PathLike]


def backend_of(path: PathLike) -> str:
    """``"db"`` or ``"h5"`` from the file suffix.

    Raises:
        HessianDataError: unsupported suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix in DB_SUFFIXES:
        return "db"
    if suffix in H5_SUFFIXES:
        return "h5"
    raise HessianDataError(
        f"{path}: unsupported training-file suffix {suffix!r}; use .db (ASE/SchNetPack) "
        "or .h5 (HDF5)"
    )


@contextlib.contextmanager
def atomic_output(
    path: PathLike, overwrite: bool = False, directory: bool = False, mkdir: bool = True
) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` that replaces ``path`` on success.

    ``path`` is claimed first (:func:`~schnetpack_hessian.files.claim_output`): a
    second writer of the same output is refused while this one runs.  The temporary
    name (``.<name>.partial-<pid>``) never looks like a finished file; on an exception
    it is removed and an existing ``path`` stays untouched.  Partial files (and SQLite
    journals) that a killed run left for the same output are removed.  An ``OSError``
    of the write (full disk, read-only directory) is raised naming ``path``.

    Args:
        path: final file (or directory with ``directory=True``).
        overwrite: allow replacing an existing ``path``.
        directory: the output is a directory (created empty for the caller).
        mkdir: create a missing parent directory (else an error).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OutputBusyError: another writer holds ``path``.
        HessianDataError: the parent directory is missing and ``mkdir`` is False.
        OSError: the directory is not writable or the disk is full (``filename`` is
            ``path``; nothing is left behind).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (--overwrite) to replace it"
        )
    if not path.parent.is_dir():
        if not mkdir:
            raise HessianDataError(
                f"{path}: the output directory {path.parent} does not exist; create it "
                "or pass --mkdir"
            )
        with _naming(path):
            path.parent.mkdir(parents=True, exist_ok=True)
    with _naming(path), claim_output(path):
        if path.exists() and not overwrite:  # written by a writer that just finished
            raise FileExistsError(
                f"{path} exists; pass overwrite=True (--overwrite) to replace it"
            )
        remove_stale_partials(path)
        tmp = partial_path(path)
        _remove(tmp)
        try:
            if directory:
                tmp.mkdir()
            yield tmp
            if directory and path.exists():
                _remove(path)
            os.replace(tmp, path)
        except BaseException:
            _remove(tmp)
            for extra in tmp.parent.glob(f"{tmp.name}-*"):
                _remove(extra)
            raise


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Re-raise an ``OSError`` of writing ``path`` (or its temporary file) as one
    naming ``path``; SQLite's "disk is full" / "readonly database" become ``OSError``.
    """
    try:
        yield
    except sqlite3.OperationalError as err:
        code = _SQLITE_ERRNO.get(next((k for k in _SQLITE_ERRNO if k in str(err)), ""))
        if code is None:
            raise
        raise OSError(code, f"{os.strerror(code)}; nothing was written", str(path))
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS or not _writing(err.filename, path):
            raise
        strerror = err.strerror or os.strerror(err.errno)
        raise OSError(err.errno, f"{strerror}; nothing was written", str(path)) from err


def _writing(filename: Any, path: Path) -> bool:
    """Whether an error's ``filename`` is ``path``, its claim, partial file or
    directory, or one of its parent directories (an unreadable input is not)."""
    if filename is None:
        return True
    name = Path(os.fsdecode(filename))
    hidden = f".{path.name}."
    return (
        name == path
        or name in path.parents
        or any(p.name.startswith(hidden) for p in (name, *name.parents))
    )


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
_SQLITE_ERRNO = {"disk is full": errno.ENOSPC, "readonly database": errno.EROFS}


def partial_path(path: PathLike, pid: Optional[int] = None) -> Path:
    """``.<name>.partial-<pid>``: where :func:`atomic_output` writes ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{os.getpid() if pid is None else pid}")


_PARTIAL = re.compile(r"\.partial-(\d+)(?:-\w+)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: PathLike) -> List[Path]:
    """Remove the partial files of ``path`` whose writing process is gone.

    Returns:
        The removed paths (partial files, folders and ``-journal`` files).
    """
    path = Path(path)
    removed = []
    for candidate in sorted(path.parent.glob(f".{path.name}.partial-*")):
        match = _PARTIAL.search(candidate.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _alive(pid):
            continue
        _remove(candidate)
        removed.append(candidate)
    return removed


def _remove(path: Path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class RecordWriter:
    """Context manager writing validated records atomically to a ``.db``/``.h5`` file.

    Args:
        path: output file; the suffix picks the backend.
        units: units of the records (keys ``distance``, ``energy``, ``forces``,
            ``hessian``); stored as the file's declared units.
        metadata: extra file metadata, e.g. ``{"source": ..., "level_of_theory": ...}``
            or ``atomrefs``.
        overwrite: replace an existing file.
        precision: storage dtype of forces and Hessians in ``.h5`` files
            (``"float64"`` or ``"float32"``; ``.db`` always stores float64).
        symmetrize: store ``(H + Hᵀ)/2``.
        rtol: symmetry tolerance (relative to ``max|H|``).
        mkdir: create a missing output directory (else an error).
        product_labels: Hessian-vector product labels per structure the file stores
            (``hessian_label_probes`` / ``hessian_label_hvp``, ``(N, k, 3)``; a record
            without labels stores missing ones); None: the file stores none.

    Reaction labels given as names are mapped to integer ids; the names are stored
    in the metadata table ``reactions`` (see
    :class:`~schnetpack_hessian.data.record.ReactionIds`).

    Example::

        with RecordWriter("out.h5", units) as w:
            for rec in records:
                w.add(rec)
    """

    def __init__(
        self,
        path: PathLike,
        units: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        overwrite: bool = False,
        precision: str = "float64",
        symmetrize: bool = False,
        rtol: float = SYMMETRY_RTOL,
        mkdir: bool = True,
        product_labels: Optional[int] = None,
    ):
        self.path = Path(path)
        self.product_labels = product_labels
        self.mkdir = mkdir
        self.backend = backend_of(self.path)
        units = units or ASE_UNITS
        missing = set(ASE_UNITS) - set(units)
        if missing:
            raise HessianDataError(f"{path}: units for {sorted(missing)} not declared")
        self.units, _ = check_units(units, where=str(path))
        self.metadata = base_metadata(self.units, metadata, product_labels)
        self.overwrite = overwrite
        if precision not in ("float64", "float32"):
            raise HessianDataError(
                f"precision must be float64 or float32, not {precision}"
            )
        self.dtype = (
            np.dtype(precision) if self.backend == "h5" else np.dtype("float64")
        )
        self.symmetrize = symmetrize
        self.rtol = rtol
        self.reactions = ReactionIds(self.metadata)
        self.report = SymmetryReport()
        self._output = None
        self._tmp: Optional[Path] = None
        self._handle = None
        self._appender = None

    def __enter__(self) -> "RecordWriter":
        self._output = atomic_output(self.path, self.overwrite, mkdir=self.mkdir)
        self._tmp = self._output.__enter__()
        if self.backend == "h5":
            self._handle = h5py.File(self._tmp, "w")
            dtypes = {"forces": self.dtype, P.hessian: self.dtype}
            self._appender = H5Appender(self._handle, self.metadata, dtypes)
        else:
            self._handle = connect(str(self._tmp), type="db", use_lock_file=False)
            with self._handle:
                self._handle.count()  # creates the tables before metadata is set
                self._handle.metadata = self.metadata
            self._appender = DBAppender(self._handle)
        return self

    def add(self, record: HessianRecord, source: Optional[str] = None):
        """Validate and queue one record.

        Errors name the record's :class:`~.record.Origin` (its input file and index)
        if it has one, else ``source`` (default: the output) and the running index.
        """
        index = self.report.n_structures
        if source is None and record.origin is not None:
            where: Any = record.origin
            at = None
        else:
            where, at = source or str(self.path), index
        record, asym = validate_record(
            record,
            where,
            at,
            rtol=self.rtol,
            symmetrize=self.symmetrize,
            units=self.units,
        )
        record.reaction = self.reactions(record.reaction, where, at)
        self.report.update(index, record.hessian is not None, asym)
        self._appender.add(
            record_to_storage(record, self.dtype, self.product_labels, where, at)
        )

    def _store_reaction_names(self):
        extra = self.reactions.metadata()
        if not extra:
            return
        self.metadata.update(extra)
        if self.backend == "h5":
            self._handle.attrs["metadata"] = json.dumps(self.metadata)
        else:
            with self._handle:
                self._handle.metadata = self.metadata

    def _close(self):
        if self.backend == "h5":
            self._handle.close()
        elif getattr(self._handle, "connection", None) is not None:
            self._handle.connection.close()  # after a failed write; else closed
            self._handle.connection = None

    def __exit__(self, exc_type, exc, tb):
        failed_here = False
        try:
            if exc_type is None:
                self._appender.flush()
                self._store_reaction_names()
            self._close()
        except BaseException as err:  # the file is removed, the error raised
            failed_here = exc_type is None
            exc_type, exc, tb = type(err), err, err.__traceback__
            with contextlib.suppress(Exception):
                self._close()
        if exc_type is not None and exc is None:
            exc = exc_type()
        self._output.__exit__(exc_type, exc, tb)  # raises a renamed write error
        if failed_here:
            raise exc
        return False


def write_records(
    path: PathLike,
    records: Iterable[HessianRecord],
    units: Optional[Dict[str, str]] = None,
    **kwargs,
) -> SymmetryReport:
    """Write records in ``units`` to a training file (see :class:`RecordWriter`).

    Returns:
        The symmetry report (structures, Hessians, worst asymmetry and its index).
    """
    with RecordWriter(path, units, **kwargs) as writer:
        for record in records:
            writer.add(record)
    return writer.report


def write(
    path: PathLike,
    structures: Iterable[Atoms],
    metadata: Optional[Dict[str, Any]] = None,
    overwrite: bool = False,
    precision: str = "float64",
) -> None:
    """Write ``ase.Atoms`` (as :func:`iread` yields them) to a ``.db`` or ``.h5`` file.

    The exact inverse of :func:`iread`.  Each ``Atoms`` carries energy [eV] and forces
    [eV/Å] on its calculator (``atoms.calc.results``), ``info["hessian"]`` [eV/Å²] as
    ``(3N, 3N)`` (also accepted: flat ``(9N²,)`` or blocks ``(N², 3, 3)``; ``None`` or
    absent: no Hessian, stored all-NaN), ``info["kind"]`` (one of
    :data:`~schnetpack_hessian.properties.KINDS`, default ``"other"``) and
    ``info["reaction"]`` (int, default -1).  The file is written atomically.

    Args:
        path: output ``.db`` or ``.h5`` file.
        structures: iterable of ``ase.Atoms`` (consumed once, streamed).
        metadata: file metadata, e.g. ``{"source": "pyscf", "level_of_theory":
            "wB97X-D/6-31G(d)"}``; an ``atomrefs`` entry becomes SchNetPack's atomrefs.
        overwrite: replace an existing file.
        precision: storage dtype of forces and Hessians in ``.h5`` files
            (``"float64"`` or ``"float32"``, which halves them); ``.db`` stores float64.

    Raises:
        HessianDataError: a structure is malformed (message names file and index).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    with RecordWriter(path, ASE_UNITS, metadata, overwrite, precision) as writer:
        for i, atoms in enumerate(structures):
            writer.add(record_from_atoms(atoms, str(path), i))


def open_dataset(path: PathLike, **kwargs):
    """SchNetPack dataset on a training file: :class:`HDF5AtomsData` for ``.h5``,
    :class:`HessianASEAtomsData` for ``.db``; ``kwargs`` as ``ASEAtomsData``.

    The dataset classes (and with them torch and SchNetPack) are imported here, so
    that reading and writing files with this module does not load torch.
    """
    from schnetpack_hessian.data.ase_db import HessianASEAtomsData
    from schnetpack_hessian.data.hdf5 import HDF5AtomsData

    if backend_of(path) == "h5":
        return HDF5AtomsData(str(path), **kwargs)
    if not Path(path).exists():
        raise HessianDataError(f"{path}: file does not exist")
    with _sqlite_errors(path):
        dataset = HessianASEAtomsData(str(path), **kwargs)
        dataset.metadata  # reads the file: a damaged one fails here, not in a worker
    return dataset


@contextlib.contextmanager
def _sqlite_errors(path: PathLike) -> Iterator[None]:
    """Turn SQLite's errors on a damaged ``.db`` into a HessianDataError."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        raise HessianDataError(
            f"{path}: cannot read the SQLite file, it is truncated, corrupt or not an "
            f"ASE database ({err})"
        ) from err


@contextlib.contextmanager
def _open_db(path: PathLike) -> Iterator[Any]:
    """An existing ``.db`` file's ASE connection, with SQLite's errors on a damaged
    file as HessianDataError."""
    if not Path(path).exists():
        raise HessianDataError(f"{path}: file does not exist")
    with (
        _sqlite_errors(path),
        connect(str(path), type="db", use_lock_file=False) as conn,
    ):
        yield conn


def file_metadata(path: PathLike) -> Dict[str, Any]:
    """Metadata of a training file (SchNetPack's keys and ours).

    Raises:
        HessianDataError: the file is missing or damaged, or its metadata lacks
            SchNetPack's ``_distance_unit`` or ``_property_unit_dict``.
    """
    if backend_of(path) == "h5":
        return read_header(str(path))[0]
    with _open_db(path) as conn:
        metadata = conn.metadata
    for key in ("_distance_unit", "_property_unit_dict"):
        if key not in metadata:
            raise HessianDataError(f"{path}: metadata lacks {key}")
    return metadata


def file_reactions(path: PathLike) -> Tuple[Optional[np.ndarray], Dict[int, str]]:
    """Reaction ids of a training file's structures and the names its metadata gives.

    Returns:
        ``(ids, names)``: int64 ``(n_structures,)`` (``None`` if the file stores no
        ``reaction`` labels as a property) and ``{id: name}``.
    """
    metadata = file_metadata(path)
    names = reaction_names(metadata)
    if backend_of(path) == "h5":
        with open_h5(str(path)) as f:
            if P.reaction not in f["properties"]:
                return None, names
            return read_labels(f, P.reaction, str(path)), names
    if P.reaction not in metadata["_property_unit_dict"]:
        return None, names
    with _open_db(path) as conn:
        return read_db_labels(conn, P.reaction), names


def file_units(path: PathLike) -> Dict[str, str]:
    """Declared units of a training file (keys as ``ASE_UNITS``).

    Raises:
        HessianDataError: the file declares no unit for energy or positions (forces
            and Hessian units default to energy/distance and energy/distance²).
    """
    md = file_metadata(path)
    pud = md.get("_property_unit_dict", {})
    units = {"distance": md.get("_distance_unit")}
    for key in ("energy", "forces", P.hessian):
        units[key] = pud.get(key)
    for key in ("distance", "energy"):
        if units[key] is None:
            raise HessianDataError(f"{path}: no unit declared for {key}")
    return complete_units(units)


def read_records(path: PathLike, locate: bool = True) -> Iterator[HessianRecord]:
    """Stream the records of a training file in its stored units (:func:`file_units`).

    Works on files written by this package and on plain SchNetPack ``.db`` files
    (without Hessian or labels: Hessian ``None``, kind ``other``, reaction -1).

    Args:
        path: the file.
        locate: name file and index in errors (False: the caller adds them).
    """
    source = str(path) if locate else None
    if backend_of(path) == "h5":
        for i, data in enumerate(iter_storage(str(path))):
            yield storage_to_record(data, source, i if locate else None)
        return
    with _open_db(path) as conn:
        for i, row in enumerate(conn.select(sort="id")):
            data = native_byte_order(row.data, str(path), i)
            data.update(
                numbers=row.numbers,
                positions=row.positions,
                cell=row.cell[:],
                pbc=row.pbc,
            )
            yield storage_to_record(data, source, i if locate else None)


def iread_records(path: PathLike) -> Iterator[HessianRecord]:
    """Read any training file (``.db`` / ``.h5``) as records in ASE units (Å, eV,
    eV/Å, eV/Å²), each checked as it is read (shapes, finite values, a Hessian
    complete or all NaN) and with its :class:`~.record.Origin` (file, index).

    Raises:
        HessianDataError: a malformed structure (file, index, problem).
    """
    units = file_units(path)
    for i, record in enumerate(read_records(path)):
        record, _ = validate_record(record, str(path), i, rtol=np.inf, units=units)
        record = convert_record(record, units, ASE_UNITS)
        record.origin = Origin(str(path), i)
        yield record


def iread(path: PathLike) -> Iterator[Atoms]:
    """Read any training file (``.db`` / ``.h5``) as ``ase.Atoms`` in ASE units.

    Every structure is checked as it is read (shapes, finite values, a Hessian
    complete or all NaN); a bad one raises with the file and its index.

    Yields:
        ``ase.Atoms`` with energy [eV] and forces [eV/Å] on a ``SinglePointCalculator``
        (a structure without them has them not among the calculator's results),
        ``info["hessian"]``: ``(3N, 3N)`` [eV/Å²] or ``None`` when the structure has no
        Hessian, ``info["kind"]``: label string, ``info["reaction"]``: int,
        ``info["reaction_name"]``: the reaction's name from the metadata table
        ``reactions`` (``None`` where the file names none).

    Raises:
        HessianDataError: a malformed structure (file, index, problem).
    """
    names = reaction_names(file_metadata(path))
    for record in iread_records(path):
        yield record_to_atoms(record, ASE_UNITS, names)


def check_file(
    path: PathLike, rtol: float = SYMMETRY_RTOL
) -> Tuple[SymmetryReport, Dict[str, str]]:
    """Validate every structure of a training file without writing anything.

    Returns:
        ``(report, units)``.

    Raises:
        HessianDataError: the first malformed structure (file, index, problem).
    """
    units = file_units(path)
    report = SymmetryReport()
    for i, record in enumerate(read_records(path)):
        record, asym = validate_record(record, str(path), i, rtol=rtol, units=units)
        report.update(i, record.hessian is not None, asym)
    return report, units
