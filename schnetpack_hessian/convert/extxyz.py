"""Extended XYZ with a Hessian per frame, both directions.

A frame carries the Hessian either in the comment line, ``hessian="h11 h12 ..."``
(9N² values, row-major (3N, 3N)), or as a per-atom array ``hessian`` of shape
``(N, 9N)`` whose row ``i`` is ``H[3i:3i+3, :]`` flattened (the three Hessian rows of
atom ``i``).  Energy and forces as ASE reads them (``energy=...``, ``forces`` array),
labels ``kind`` / ``reaction`` in the comment line (``reaction`` an id or a name such as
``keto_enol_3``; our writer adds ``reaction_name="..."`` where the name is known, and
the reader prefers it, so names survive a round trip).  Units are whatever the file says
in ``energy_unit=... distance_unit=...`` keys (our writer adds them) or what the user
declares (``--energy-unit``, ``--distance-unit``); they are never guessed.  Units are
read per frame: the file's units are those of its first frame, and a later frame that
declares other units (e.g. ``energy_unit=kcal/mol``) is converted to them.  Energy,
forces and Hessian must be numbers: ``energy=T`` (a boolean to ASE) or text is an error
naming file, frame and key.

The writer prints every float with 17 significant digits, so float64 round trips exactly.
"""

from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional

import numpy as np
from ase.data import chemical_symbols
from ase.io import iread as ase_iread

from schnetpack_hessian.layout import as_square
from schnetpack_hessian import properties as P
from schnetpack_hessian.convert.base import (
    ConversionError,
    Entry,
    PathLike,
    Reader,
    require_energy_and_forces,
)
from schnetpack_hessian.data.io import atomic_output
from schnetpack_hessian.data.record import (
    HessianRecord,
    convert_record,
    hessian_to_square,
    validate_record,
)
from schnetpack_hessian.data.units import complete_units, derived_units

__all__ = ["READER", "ExtxyzReader", "write", "SUFFIXES"]

SUFFIXES = (".xyz", ".extxyz")
_UNIT_KEYS = {"energy": "energy_unit", "distance": "distance_unit"}


def _numeric(key: str, value: Any) -> np.ndarray:
    """``value`` as a float64 array; booleans (``energy=T``) and text are errors
    (located by the driver: file and frame)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        shown = repr(value) if arr.ndim == 0 else f"an array of {arr.dtype.name}"
        raise ConversionError(
            f"{key} is {shown}, not a number (a boolean T/F or text in the file)"
        )
    return arr.astype(np.float64)


def _frame_hessian(atoms) -> "np.ndarray | None":
    n = len(atoms)
    if P.hessian in atoms.arrays:
        arr = _numeric(P.hessian, atoms.arrays[P.hessian])
        if arr.shape != (n, 9 * n):
            raise ConversionError(
                f"per-atom hessian has shape {arr.shape}, expected (N, 9N) = "
                f"{(n, 9 * n)}"
            )
        return as_square(arr, n)
    value = atoms.info.get(P.hessian)
    if value is None:
        return None
    return hessian_to_square(_numeric(P.hessian, value), n)


def _frame_record(atoms) -> HessianRecord:
    results = getattr(atoms.calc, "results", {}) or {}
    energy = results.get("energy", atoms.info.get("energy"))
    forces = results.get("forces", atoms.arrays.get("forces"))
    if energy is None or forces is None:
        raise ConversionError("energy or forces missing")
    return HessianRecord(
        numbers=atoms.numbers.copy(),
        positions=atoms.positions.copy(),
        energy=float(_numeric("energy", energy).reshape(-1)[0]),
        forces=_numeric("forces", forces),
        hessian=_frame_hessian(atoms),
        kind=atoms.info.get(P.kind, "other"),
        reaction=atoms.info.get(P.reaction_name) or atoms.info.get(P.reaction, -1),
        cell=np.asarray(atoms.cell[:], dtype=np.float64),
        pbc=atoms.pbc.copy(),
    )


def _declared_units(atoms) -> Dict[str, str]:
    """The units a frame declares (``energy``/``distance``; empty if none)."""
    return {k: atoms.info[key] for k, key in _UNIT_KEYS.items() if key in atoms.info}


def _frame_units(atoms, fallback: Mapping[str, Optional[str]]) -> Dict[str, str]:
    """All four units of a frame: its own declaration, else ``fallback`` (the
    user's options for the first frame, the first frame's units for later ones)."""
    declared = {k: fallback.get(k) for k in _UNIT_KEYS}
    declared.update(_declared_units(atoms))
    return complete_units(declared)


class ExtxyzReader(Reader):
    """Extended XYZ frames; units from ``energy_unit=``/``distance_unit=`` of each
    frame (converted to the first frame's) or declared by the user; ``reaction``
    labels may be ids or names."""

    name = "extxyz"
    metadata = {"source": "extxyz"}

    def detect(self, path: Path) -> bool:
        """True for ``*.xyz`` / ``*.extxyz`` files."""
        return Path(path).suffix.lower() in SUFFIXES

    def file_units(self, path: Path, options: Dict[str, Any]) -> Dict[str, str]:
        """The units the first frame declares (those of the converted file)."""
        frame = next(ase_iread(str(path), index=":", format="extxyz"), None)
        if frame is None:
            raise ConversionError(f"{path}: no frames")
        return _declared_units(frame)

    def entries(
        self, path: Path, options: Dict[str, Any], prepared: Dict[str, Any]
    ) -> Iterator[Entry]:
        """One entry per frame, converted from its own declared units to the
        first frame's."""
        frames = ase_iread(str(path), index=":", format="extxyz")
        target: Optional[Dict[str, str]] = None
        while True:
            try:
                atoms = next(frames)
            except StopIteration:
                return
            except KeyError as err:  # ASE's symbol lookup
                raise ConversionError(f"unknown element symbol {err}") from err
            if target is None:
                target = _frame_units(
                    atoms, {k: options.get(f"{k}_unit") for k in _UNIT_KEYS}
                )

            def load(atoms=atoms) -> HessianRecord:
                units = _frame_units(atoms, target)
                record = _frame_record(atoms)
                return (
                    record if units == target else convert_record(record, units, target)
                )

            yield None, load


READER = ExtxyzReader()


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _reaction_fields(names: Optional[Mapping[int, str]], reaction) -> List[str]:
    """``reaction=<id or "name">`` and, where the id has a name, ``reaction_name``."""
    if isinstance(reaction, str):
        return [f"{P.reaction}={_quoted(reaction)}"]
    fields = [f"{P.reaction}={reaction}"]
    if names and reaction in names:
        fields.append(f"{P.reaction_name}={_quoted(names[reaction])}")
    return fields


def _f(x: float) -> str:
    return repr(float(x))


def write(
    path: PathLike,
    records: Iterable[HessianRecord],
    units: Dict[str, str],
    overwrite: bool = False,
    per_atom: bool = False,
    mkdir: bool = True,
    reaction_names: Optional[Mapping[int, str]] = None,
) -> int:
    """Write records as extxyz (units of the records, declared in every frame).

    Args:
        path: output ``.xyz`` / ``.extxyz``.
        records: the structures.
        units: their units.
        overwrite: replace an existing file.
        per_atom: store the Hessian as per-atom array ``(N, 9N)`` instead of in the
            comment line.
        mkdir: create a missing output directory (else an error).
        reaction_names: ``{id: name}``; a record whose id has a name is written with
            ``reaction_name="<name>"`` as well (read at write time, so a mapping that
            grows while records stream works).

    Returns:
        Number of frames written.
    """
    target = derived_units(units["energy"], units["distance"])
    n_frames = 0
    with atomic_output(path, overwrite, mkdir=mkdir) as tmp, open(tmp, "w") as fh:
        for i, rec in enumerate(records):
            rec, _ = validate_record(
                rec, *((None, None) if rec.origin else (path, i)), units=units
            )
            require_energy_and_forces(rec, "extxyz", path, i)
            rec = convert_record(rec, units, target)
            n = rec.n_atoms
            props = "species:S:1:pos:R:3:forces:R:3"
            info = [f"energy={_f(rec.energy)}"]
            if rec.hessian is not None and per_atom:
                props += f":{P.hessian}:R:{9 * n}"
            elif rec.hessian is not None:
                info.append(
                    f'{P.hessian}="' + " ".join(map(_f, np.ravel(rec.hessian))) + '"'
                )
            if rec.pbc.any():
                info.insert(
                    0, 'Lattice="' + " ".join(map(_f, np.ravel(rec.cell))) + '"'
                )
            pbc = " ".join("T" if b else "F" for b in rec.pbc)
            info += [
                f"{P.kind}={rec.kind}",
                *_reaction_fields(reaction_names, rec.reaction),
                f"energy_unit={target['energy']}",
                f"distance_unit={target['distance']}",
                f'pbc="{pbc}"',
            ]
            fh.write(f"{n}\nProperties={props} " + " ".join(info) + "\n")
            rows = (
                rec.hessian.reshape(n, 9 * n)
                if rec.hessian is not None and per_atom
                else None
            )
            for a in range(n):
                cols = [chemical_symbols[rec.numbers[a]]]
                cols += map(_f, rec.positions[a])
                cols += map(_f, rec.forces[a])
                if rows is not None:
                    cols += map(_f, rows[a])
                fh.write(" ".join(cols) + "\n")
            n_frames += 1
    return n_frames
