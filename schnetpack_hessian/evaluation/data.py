"""Reference structures for evaluation from any file ``spkhess-convert`` reads.

Training files (``.h5`` / ``.db``) and every external format go through the same
reader and validation as a conversion, then become
:class:`~schnetpack_hessian.data.record.HessianRecord` objects in ASE units (Å, eV,
eV/Å, eV/Å²): the one form of a structure that evaluation and the study pass around.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ase import Atoms

from schnetpack_hessian.convert import open_source
from schnetpack_hessian.data.physics import PhysicsCheck
from schnetpack_hessian.data.record import (
    HessianRecord,
    convert_record,
    reaction_names,
    record_from_atoms,
    validate_record,
)
from schnetpack_hessian.data.units import ASE_UNITS

__all__ = ["ReferenceSet", "read_structures", "load_structures", "as_records"]

PathLike = Union[str, Path]


@dataclass(frozen=True)
class ReferenceSet:
    """Reference structures read once, with what their file says about them.

    Attributes:
        records: the structures in ASE units, in file order (after the filters).
        reaction_names: reaction id → name from the file's metadata.
        name: the inputs, for messages.
        metadata: the file's metadata (``atomrefs``, ``source``, ...).
    """

    records: List[HessianRecord]
    reaction_names: Dict[int, str]
    name: str
    metadata: Dict[str, Any] = field(default_factory=dict)


def read_structures(
    paths: Sequence[PathLike],
    fmt: Optional[str] = None,
    kinds: Optional[Sequence[str]] = None,
    max_structures: Optional[int] = None,
    physics: Optional[PhysicsCheck] = None,
    **options: Any,
) -> ReferenceSet:
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
        The records in ASE units (each with its origin, reaction an ``int`` id), the
        reaction names, the source's name and its metadata.

    Raises:
        ConversionError / HessianDataError: unreadable or malformed input.
    """
    source = open_source(list(paths), fmt, **options)
    physics = physics or PhysicsCheck()
    wanted = set(kinds) if kinds else None
    records: List[HessianRecord] = []
    for record in source.records:
        record, _ = validate_record(record, units=source.units)
        physics(record, source.units)
        if wanted is not None and record.kind not in wanted:
            continue
        record = convert_record(record, source.units, ASE_UNITS)
        records.append(replace(record, reaction=int(record.reaction)))
        if max_structures is not None and len(records) >= max_structures:
            break
    return ReferenceSet(
        records, reaction_names(source.metadata), source.name, dict(source.metadata)
    )


def load_structures(
    paths: Sequence[PathLike],
    fmt: Optional[str] = None,
    kinds: Optional[Sequence[str]] = None,
    max_structures: Optional[int] = None,
    physics: Optional[PhysicsCheck] = None,
    **options: Any,
) -> Tuple[List[HessianRecord], Dict[int, str], str]:
    """:func:`read_structures` as ``(records, reaction names, source name)``."""
    data = read_structures(paths, fmt, kinds, max_structures, physics, **options)
    return data.records, data.reaction_names, data.name


def as_records(
    structures: Sequence[Union[HessianRecord, Atoms]],
) -> List[HessianRecord]:
    """Records as given; ``ase.Atoms`` in ``iread``'s convention (ASE units, energy
    and forces on the calculator, ``info["hessian"]``, ``info["kind"]``,
    ``info["reaction"]``) become records once, for callers who hold Atoms."""
    return [
        s if isinstance(s, HessianRecord) else record_from_atoms(s, index=i)
        for i, s in enumerate(structures)
    ]
