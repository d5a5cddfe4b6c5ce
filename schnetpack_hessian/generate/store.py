"""Work-directory checkpoints: one small file per finished structure.

Every labelled geometry is written to its own ``.npz`` file the moment it is done,
through a temporary file and an atomic rename, so a killed (or ``SIGSTOP``-paused)
run never leaves a half-written checkpoint and a rerun skips what exists.  Later
steps always read their inputs back from these files, which makes an interrupted
and restarted run follow exactly the same data as an uninterrupted one.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from schnetpack_hessian import properties
from schnetpack_hessian.files import atomic_write_bytes

__all__ = [
    "Structure",
    "atomic_write_bytes",
    "write_json",
    "read_json",
    "save_structure",
    "load_structure",
    "save_arrays",
    "load_arrays",
]

PathLike = Union[str, Path]


@dataclass
class Structure:
    """A labelled geometry.

    Attributes:
        numbers: ``(N,)`` atomic numbers.
        positions: ``(N, 3)`` positions in Å.
        energy: energy in eV.
        forces: ``(N, 3)`` forces in eV/Å.
        hessian: ``(3N, 3N)`` Hessian in eV/Å².
        kind: one of :data:`schnetpack_hessian.properties.KINDS`.
        reaction: reaction id.
    """

    numbers: np.ndarray
    positions: np.ndarray
    energy: float
    forces: np.ndarray
    hessian: np.ndarray
    kind: str
    reaction: int

    def to_atoms(self) -> Atoms:
        """``ase.Atoms`` with energy/forces on a SinglePointCalculator and
        ``info["hessian"]`` (3N, 3N) eV/Å², ``info["kind"]``, ``info["reaction"]``."""
        atoms = Atoms(numbers=self.numbers, positions=self.positions)
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(self.energy), forces=np.array(self.forces)
        )
        atoms.info[properties.hessian] = np.array(self.hessian)
        atoms.info[properties.kind] = str(self.kind)
        atoms.info[properties.reaction] = int(self.reaction)
        return atoms


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
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_structure(path: PathLike, s: Structure) -> None:
    """Atomically save a :class:`Structure` as ``.npz``."""
    atomic_write_bytes(
        path,
        _npz_bytes(
            dict(
                numbers=np.asarray(s.numbers, dtype=np.int64),
                positions=np.asarray(s.positions, dtype=np.float64),
                energy=np.float64(s.energy),
                forces=np.asarray(s.forces, dtype=np.float64),
                hessian=np.asarray(s.hessian, dtype=np.float64),
                kind=np.str_(s.kind),
                reaction=np.int64(s.reaction),
            )
        ),
    )


def load_structure(path: PathLike) -> Optional[Structure]:
    """Load a :class:`Structure` saved by :func:`save_structure`; ``None`` if absent."""
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return Structure(
            numbers=z["numbers"],
            positions=z["positions"],
            energy=float(z["energy"]),
            forces=z["forces"],
            hessian=z["hessian"],
            kind=str(z["kind"]),
            reaction=int(z["reaction"]),
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
