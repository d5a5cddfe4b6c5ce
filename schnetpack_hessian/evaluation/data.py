"""Reference structures for evaluation from any file ``spkhess-convert`` reads.

Training files (``.h5`` / ``.db``) and every external format go through the same
reader and validation as a conversion, then become ``ase.Atoms`` in ASE units.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ase import Atoms

from schnetpack_hessian import properties as P
from schnetpack_hessian.convert import open_source
from schnetpack_hessian.data.record import record_to_atoms, validate_record

__all__ = ["load_structures", "reaction_names"]

PathLike = Union[str, Path]


def reaction_names(metadata: Dict[str, Any]) -> Dict[int, str]:
    """Reaction id → name from a file's metadata (``reaction_names`` or the
    generator's ``reactions`` table)."""
    names: Dict[int, str] = {}
    for rid, name in (metadata.get("reaction_names") or {}).items():
        names[int(rid)] = str(name)
    reactions = metadata.get("reactions")
    if isinstance(reactions, dict):
        for rid, entry in reactions.items():
            if isinstance(entry, dict) and entry.get("name"):
                names.setdefault(int(rid), str(entry["name"]))
    return names


def load_structures(
    paths: Sequence[PathLike],
    fmt: Optional[str] = None,
    kinds: Optional[Sequence[str]] = None,
    max_structures: Optional[int] = None,
    **options: Any,
) -> Tuple[List[Atoms], Dict[int, str], str]:
    """Read and validate reference structures.

    Args:
        paths: input files of one format.
        fmt: format (guessed if None), as for ``spkhess-convert``.
        kinds: keep only these kinds (e.g. ``["ts", "irc"]``).
        max_structures: keep at most this many (after the kind filter).
        **options: reader options (``energy_unit``, ``distance_unit``, ...).

    Returns:
        ``(structures, reaction names, source name)``.

    Raises:
        ConversionError / HessianDataError: unreadable or malformed input.
    """
    source = open_source(list(paths), fmt, **options)
    wanted = set(kinds) if kinds else None
    structures: List[Atoms] = []
    for i, record in enumerate(source.records):
        record, _ = validate_record(record, source.name, i)
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
