"""Work-directory checkpoints: one small file per finished structure.

Every labelled geometry is written to its own ``.npz`` file the moment it is done,
through a temporary file and an atomic rename, so a killed (or ``SIGSTOP``-paused)
run never leaves a half-written checkpoint and a rerun skips what exists.  Later
steps always read their inputs back from these files, which makes an interrupted
and restarted run follow exactly the same data as an uninterrupted one.

A checkpoint holds one :class:`~schnetpack_hessian.data.record.HessianRecord` in
ASE units (Å, eV, eV/Å, eV/Å²) under the keys ``numbers``, ``positions``,
``energy``, ``forces``, ``hessian`` (square ``(3N, 3N)``), ``kind`` and
``reaction``; a missing energy, forces or Hessian is stored all NaN.
"""

import io
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from schnetpack_hessian.data.record import HessianRecord, Origin
from schnetpack_hessian.data.validation import is_missing
from schnetpack_hessian.files import atomic_write_bytes

__all__ = [
    "write_json",
    "read_json",
    "save_structure",
    "load_structure",
    "save_arrays",
    "load_arrays",
]

PathLike = Union[str, Path]


def write_json(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    atomic_write_bytes(
        path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
    )


def read_json(path: PathLike) -> Any:
    """Read a JSON file."""
    with open(path) as fh:
        return json.load(fh)


def _npz_bytes(arrays: Dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _stored(value: Optional[Any], shape: tuple) -> np.ndarray:
    """A target as float64, a missing one (``None``) all NaN of ``shape``."""
    if value is None:
        return np.full(shape, np.nan)
    return np.asarray(value, dtype=np.float64)


def save_structure(path: PathLike, record: HessianRecord) -> None:
    """Atomically save a record in ASE units as ``.npz`` (layout: module docstring)."""
    n = record.n_atoms
    atomic_write_bytes(
        path,
        _npz_bytes(
            dict(
                numbers=np.asarray(record.numbers, dtype=np.int64),
                positions=np.asarray(record.positions, dtype=np.float64),
                energy=_stored(record.energy, ()),
                forces=_stored(record.forces, (n, 3)),
                hessian=_stored(record.hessian, (3 * n, 3 * n)),
                kind=np.str_(record.kind),
                reaction=np.int64(record.reaction),
            )
        ),
    )


def load_structure(path: PathLike) -> Optional[HessianRecord]:
    """The record saved by :func:`save_structure` (its origin: ``path``), ``None`` if
    the file is absent; an all-NaN energy, forces or Hessian becomes ``None``."""
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        targets = {k: z[k] for k in ("energy", "forces", "hessian")}
        targets = {k: None if is_missing(v) else v for k, v in targets.items()}
        return HessianRecord(
            numbers=z["numbers"],
            positions=z["positions"],
            energy=None if targets["energy"] is None else float(targets["energy"]),
            forces=targets["forces"],
            hessian=targets["hessian"],
            kind=str(z["kind"]),
            reaction=int(z["reaction"]),
            origin=Origin(str(path), 0),
        )


def save_arrays(path: PathLike, arrays: Dict[str, np.ndarray]) -> None:
    """Atomically save named arrays as ``.npz``."""
    atomic_write_bytes(path, _npz_bytes(arrays))


def load_arrays(path: PathLike) -> Optional[Dict[str, np.ndarray]]:
    """Arrays saved by :func:`save_arrays`; ``None`` if absent."""
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
