"""SchNetPack / ASE ``.db`` files with Hessians in ``spk.atomistic.Response`` layout.

Such files are made with :class:`schnetpack.data.ASEAtomsData`: every row stores its
properties in ``row.data``; the file metadata declares ``_property_unit_dict`` and
``_distance_unit``.  The Hessian may be stored as SchNetPack's ``(N², 3, 3)`` blocks
(what ``Response`` predicts and ``HessianOutput`` expects), as ``(3N, 3N)`` or flat;
property names are configurable.  Labels ``kind`` (int code or string) and
``reaction`` are taken from ``row.data`` or the key-value pairs when present.
"""

from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
from ase.db import connect

from schnetpack_hessian import properties as P
from schnetpack_hessian.convert.base import ConversionError, Entry, Option, Reader
from schnetpack_hessian.data.io import file_reactions
from schnetpack_hessian.data.record import HessianRecord, hessian_to_square, kind_name
from schnetpack_hessian.data.storage import native_byte_order

__all__ = ["READER", "SpkdbReader"]

_KEYS = {"energy": "energy_key", "forces": "forces_key", P.hessian: "hessian_key"}


def _label(row, data: Dict[str, Any], name: str):
    if name in data:
        return np.asarray(data[name]).reshape(-1)[0]
    return row.key_value_pairs.get(name)


def _row_record(row, keys: Dict[str, str], path: Path) -> HessianRecord:
    n = row.natoms
    for name in ("energy", "forces"):
        if keys[name] not in row.data:
            raise ConversionError(f"row {row.id} has no {keys[name]!r} data")
    data = native_byte_order(row.data, str(path), row.id - 1)
    h = data.get(keys[P.hessian])
    if h is not None:
        h = hessian_to_square(np.asarray(h, dtype=np.float64), n)
    k = _label(row, data, P.kind)
    if k is not None and not isinstance(k, str):
        k = kind_name(k)
    r = _label(row, data, P.reaction)
    return HessianRecord(
        numbers=row.numbers,
        positions=row.positions,
        energy=float(np.asarray(data[keys["energy"]]).reshape(-1)[0]),
        forces=np.asarray(data[keys["forces"]]).reshape(n, 3),
        hessian=h,
        kind=k or "other",
        reaction=-1 if r is None else r,
        cell=np.asarray(row.cell[:], dtype=np.float64),
        pbc=row.pbc,
    )


class SpkdbReader(Reader):
    """SchNetPack ``.db`` files; units from their metadata, property names as
    options."""

    name = "spkdb"
    options = {
        "energy_key": Option("energy", "name of the energy property"),
        "forces_key": Option("forces", "name of the forces property"),
        "hessian_key": Option(P.hessian, "name of the Hessian property"),
    }

    def detect(self, path: Path) -> bool:
        """True for ``*.db`` files."""
        return Path(path).suffix.lower() == ".db"

    def _metadata(self, path: Path) -> Dict[str, Any]:
        if not path.is_file():
            raise ConversionError(f"{path}: file does not exist")
        with connect(str(path), type="db", use_lock_file=False) as conn:
            return conn.metadata

    def file_units(self, path: Path, options: Dict[str, Any]) -> Dict[str, str]:
        md = self._metadata(path)
        pud = md.get("_property_unit_dict")
        if pud is None or "_distance_unit" not in md:
            raise ConversionError(
                f"{path}: no _property_unit_dict/_distance_unit metadata; units are "
                "never guessed (write the file with schnetpack.data.ASEAtomsData.create)"
            )
        units = {"distance": md["_distance_unit"]}
        for name, option in _KEYS.items():
            key = options[option]
            if key not in pud:
                if name == P.hessian:
                    continue  # no Hessians: the driver derives the unit
                raise ConversionError(
                    f"{path}: property {key!r} not in the file ({list(pud)})"
                )
            if pud[key] is None:
                raise ConversionError(f"{path}: no unit declared for {key!r}")
            units[name] = pud[key]
        return units

    def count(self, path: Path) -> Optional[int]:
        with connect(str(path), type="db", use_lock_file=False) as conn:
            return conn.count()

    def reactions(self, path: Path) -> Optional[Tuple[Any, Dict[int, str]]]:
        ids, names = file_reactions(path)
        return None if ids is None else (ids, names)

    def prepare(self, files: Sequence[Path], options: Dict[str, Any]) -> Dict[str, Any]:
        md = self._metadata(files[0]) if len(files) == 1 else {}
        md = {k: v for k, v in md.items() if not k.startswith("_")}
        md.setdefault("source", "schnetpack-db")
        return {"metadata": md}

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        keys = {name: options[option] for name, option in _KEYS.items()}
        with connect(str(path), type="db", use_lock_file=False) as conn:
            for row in conn.select(sort="id"):
                yield f"id {row.id}", lambda row=row: _row_record(row, keys, path)


READER = SpkdbReader()
