"""Reference structures for evaluation from any file ``spkhess-convert`` reads.

Training files (``.h5`` / ``.db``) and every external format go through the same
reader and validation as a conversion, then become ``ase.Atoms`` in ASE units.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ase import Atoms

from schnetpack_hessian import properties as P
from schnetpack_hessian.convert import open_source
from schnetpack_hessian.data.physics import PhysicsCheck
from schnetpack_hessian.data.record import (
    reaction_names,
    record_to_atoms,
    validate_record,
)

__all__ = ["load_structures"]

PathLike = Union[str, Path]


def load_structures(
    paths: Sequence[PathLike],
    fmt: Optional[str] = None,
    kinds: Optional[Sequence[str]] = None,
    max_structures: Optional[int] = None,
    physics: Optional[PhysicsCheck] = None,
    **options: Any,
) -> Tuple[List[Atoms], Dict[int, str], str]:
    """Read and validate reference structures, as strictly as ``spkhess-convert``
    (shapes, finite values, symmetry, sum rules against the forces).

    Args:
        paths: input files of one format.
        fmt: format (guessed if None), as for ``spkhess-convert``.
        kinds: keep only these kinds (e.g. ``["ts", "irc"]``).
        max_structures: keep at most this many (after the kind filter).
        physics: the physics check (default: on, raising on failure).
        **options: reader options (``energy_unit``, ``distance_unit``, ...).

    Returns:
        ``(structures, reaction names, source name)``.

    Raises:
        ConversionError / HessianDataError: unreadable or malformed input.
    """
    source = open_source(list(paths), fmt, **options)
    physics = physics or PhysicsCheck()
    wanted = set(kinds) if kinds else None
    structures: List[Atoms] = []
    for i, record in enumerate(source.records):
        record, _ = validate_record(record, units=source.units)
        physics(record, source.units)
        if wanted is not None and record.kind not in wanted:
            continue
        atoms = record_to_atoms(record, source.units)
        atoms.info["source_index"] = i
        structures.append(atoms)
        if max_structures is not None and len(structures) >= max_structures:
            break
    for atoms in structures:
        atoms.info.setdefault(P.kind, "other")
    return structures, reaction_names(source.metadata), source.name
