"""SchNetPack / ASE ``.db`` files with Hessians in ``spk.atomistic.Response`` layout.

Such files are made with :class:`schnetpack.data.ASEAtomsData`: every row stores its
properties in ``row.data``; the file metadata declares ``_property_unit_dict`` and
``_distance_unit``.  The Hessian may be stored as SchNetPack's ``(N², 3, 3)`` blocks
(what ``Response`` predicts and ``HessianOutput`` expects), as ``(3N, 3N)`` or flat;
property names are configurable.  Labels ``kind`` (int code or string) and
``reaction`` are taken from ``row.data`` or the key-value pairs when present.
"""

from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

import numpy as np
from ase.db import connect

from schnetpack_hessian import properties as P
from schnetpack_hessian.convert.base import (
    ConversionError,
    PathLike,
    Source,
    check_kind,
)
from schnetpack_hessian.data.record import HessianRecord, hessian_to_square, kind_name
from schnetpack_hessian.data.units import normalize_unit

__all__ = ["detect", "read"]


def detect(path: PathLike) -> bool:
    """True for ``*.db`` files."""
    return Path(path).suffix.lower() == ".db"


def _units(path: Path, md: Dict[str, Any], keys: Dict[str, str], has_hessian: bool):
    pud = md.get("_property_unit_dict")
    if pud is None or "_distance_unit" not in md:
        raise ConversionError(
            f"{path}: no _property_unit_dict/_distance_unit metadata; units are never "
            "guessed (write the file with schnetpack.data.ASEAtomsData.create)"
        )
    units = {"distance": md["_distance_unit"]}
    for name, key in keys.items():
        if key not in pud:
            if name == P.hessian and not has_hessian:
                units[name] = (
                    f"{pud[keys['energy']]}/{units['distance']}/{units['distance']}"
                )
                continue
            raise ConversionError(
                f"{path}: property {key!r} not in the file ({list(pud)})"
            )
        if pud[key] is None:
            raise ConversionError(f"{path}: no unit declared for {key!r}")
        units[name] = pud[key]
    return {k: normalize_unit(v) for k, v in units.items()}


def _label(row, name: str):
    if name in row.data:
        return np.asarray(row.data[name]).reshape(-1)[0]
    return row.key_value_pairs.get(name)


def read(
    paths: Sequence[PathLike],
    kind: Optional[str] = None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    hessian_key: str = P.hessian,
    **_: Any,
) -> Source:
    """Read SchNetPack ``.db`` files (units from their metadata).

    Args:
        paths: ``.db`` files (all with the same units).
        kind: override the ``kind`` label.
        energy_key: name of the energy property.
        forces_key: name of the forces property.
        hessian_key: name of the Hessian property (absent: no Hessians).

    Raises:
        ConversionError: undeclared units, differing units, bad shapes.
    """
    check_kind(kind, ", ".join(map(str, paths)))
    keys = {"energy": energy_key, "forces": forces_key, P.hessian: hessian_key}
    units = None
    total = 0
    for p in map(Path, paths):
        if not p.exists():
            raise ConversionError(f"{p}: file does not exist")
        with connect(str(p), type="db", use_lock_file=False) as conn:
            md = conn.metadata
            total += conn.count()
        pud = md.get("_property_unit_dict", {})
        u = _units(p, md, keys, hessian_key in pud)
        if units is not None and u != units:
            raise ConversionError(
                f"{p}: units {u} differ from the other inputs' {units}"
            )
        units = u

    def records() -> Iterator[HessianRecord]:
        for p in map(Path, paths):
            with connect(str(p), type="db", use_lock_file=False) as conn:
                for i, row in enumerate(conn.select(sort="id")):
                    n = row.natoms
                    h = row.data.get(hessian_key)
                    if h is not None:
                        h = hessian_to_square(
                            np.asarray(h, dtype=np.float64), n, str(p), i
                        )
                    k = _label(row, P.kind)
                    if k is not None and not isinstance(k, str):
                        k = kind_name(k, str(p), i)
                    r = _label(row, P.reaction)
                    yield HessianRecord(
                        numbers=row.numbers,
                        positions=row.positions,
                        energy=float(np.asarray(row.data[energy_key]).reshape(-1)[0]),
                        forces=np.asarray(row.data[forces_key]).reshape(n, 3),
                        hessian=h,
                        kind=kind or k or "other",
                        reaction=-1 if r is None else int(r),
                        cell=np.asarray(row.cell[:], dtype=np.float64),
                        pbc=row.pbc,
                    )

    md_out = (
        {k: v for k, v in md.items() if not k.startswith("_")}
        if len(paths) == 1
        else {}
    )
    md_out.setdefault("source", "schnetpack-db")
    return Source(records(), units, md_out, total, ", ".join(map(str, paths)))
