"""One structure with energy, forces, Hessian and labels: what readers yield and
writers consume, in the units declared next to it.

Readers of external formats yield :class:`HessianRecord` objects in the units of their
source (e.g. Hartree for OpenREACT), so that a conversion stores numbers unchanged and
round trips are exact; :func:`record_to_atoms` / :func:`record_from_atoms` translate to
and from ``ase.Atoms`` in ASE units (eV, Å).
"""

from dataclasses import dataclass, field, replace
from typing import Dict, Optional

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from schnetpack_hessian import properties as P
from schnetpack_hessian.layout import blocks_to_square
from schnetpack_hessian.data.units import conversion_factor, ASE_UNITS
from schnetpack_hessian.data.validation import (
    HessianDataError,
    check_array,
    check_hessian,
    check_numbers,
    where,
)

__all__ = [
    "HessianRecord",
    "kind_code",
    "kind_name",
    "record_to_atoms",
    "record_from_atoms",
    "convert_record",
    "validate_record",
]


def kind_code(
    kind: str, source: Optional[str] = None, index: Optional[int] = None
) -> int:
    """Integer code of a ``kind`` label: its index in :data:`properties.KINDS`.

    Raises:
        HessianDataError: unknown label.
    """
    try:
        return P.KINDS.index(kind)
    except ValueError:
        raise HessianDataError(
            f"{where(source, index)}: unknown kind {kind!r}, expected one of {P.KINDS}"
        ) from None


def kind_name(
    code: int, source: Optional[str] = None, index: Optional[int] = None
) -> str:
    """Label of an integer ``kind`` code (inverse of :func:`kind_code`).

    Raises:
        HessianDataError: code out of range.
    """
    code = int(code)
    if not 0 <= code < len(P.KINDS):
        raise HessianDataError(
            f"{where(source, index)}: kind code {code} is not in 0..{len(P.KINDS) - 1}"
        )
    return P.KINDS[code]


@dataclass
class HessianRecord:
    """A structure with its reference data.

    Attributes:
        numbers: atomic numbers ``(N,)``.
        positions: Cartesian positions ``(N, 3)`` [distance unit].
        energy: total energy [energy unit].
        forces: forces ``(N, 3)`` = −dE/dR [force unit].
        hessian: square Hessian ``(3N, 3N)`` d²E/dR² [Hessian unit], ``None`` if missing.
        kind: one of :data:`properties.KINDS`.
        reaction: reaction id, ``-1`` if none.
        cell: unit cell ``(3, 3)`` [distance unit].
        pbc: periodic boundary conditions ``(3,)``.
    """

    numbers: np.ndarray
    positions: np.ndarray
    energy: Optional[float]
    forces: Optional[np.ndarray]
    hessian: Optional[np.ndarray] = None
    kind: str = "other"
    reaction: int = -1
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))

    @property
    def n_atoms(self) -> int:
        """Number of atoms N."""
        return int(len(self.numbers))


def validate_record(
    record: HessianRecord,
    source: Optional[str] = None,
    index: Optional[int] = None,
    rtol: float = 1e-2,
    symmetrize: bool = False,
) -> "tuple[HessianRecord, float]":
    """Check shapes against the atom count, finite values, elements, labels, symmetry.

    Args:
        record: the structure.
        source: file name for messages.
        index: structure index for messages.
        rtol: symmetry tolerance, see :func:`~.validation.check_hessian`.
        symmetrize: replace the Hessian by ``(H + Hᵀ)/2``.

    Returns:
        ``(record, asymmetry)``: the normalised record (arrays as numpy, Hessian ``None``
        when missing, possibly symmetrised) and the Hessian's relative asymmetry.

    Raises:
        HessianDataError: on any problem, naming file, structure and problem.
    """
    numbers = np.asarray(record.numbers)
    check_numbers(numbers, source, index)
    n = len(numbers)
    positions = check_array("positions", record.positions, (n, 3), source, index)
    energy = check_array(
        "energy",
        None if record.energy is None else np.asarray(record.energy).reshape(-1),
        (1,),
        source,
        index,
    )
    forces = check_array("forces", record.forces, (n, 3), source, index)
    hessian, asym = check_hessian(
        record.hessian, n, source, index, rtol=rtol, fix_symmetry=symmetrize
    )
    kind_code(record.kind, source, index)
    if int(record.reaction) != record.reaction:
        raise HessianDataError(
            f"{where(source, index)}: reaction id {record.reaction!r} is not an integer"
        )
    cell = check_array("cell", record.cell, (3, 3), source, index)
    pbc = np.asarray(record.pbc, dtype=bool).reshape(3)
    return (
        replace(
            record,
            numbers=numbers.astype(np.int64),
            positions=positions,
            energy=float(energy[0]),
            forces=forces,
            hessian=hessian,
            reaction=int(record.reaction),
            cell=cell,
            pbc=pbc,
        ),
        asym,
    )


def convert_record(
    record: HessianRecord, units: Dict[str, str], target: Dict[str, str]
) -> HessianRecord:
    """Convert a record from ``units`` to ``target`` units.

    Args:
        record: the structure.
        units: its units, keys ``distance``, ``energy``, ``forces``, ``hessian``.
        target: wanted units, same keys.

    Returns:
        A new record (the input is unchanged; arrays are shared when a factor is 1).
    """
    f = {k: conversion_factor(units[k], target[k]) for k in ASE_UNITS}

    def scale(value, factor):
        if value is None or factor == 1.0:
            return value
        return np.asarray(value) * factor

    return replace(
        record,
        positions=scale(record.positions, f["distance"]),
        cell=scale(record.cell, f["distance"]),
        energy=None if record.energy is None else float(record.energy) * f["energy"],
        forces=scale(record.forces, f["forces"]),
        hessian=scale(record.hessian, f[P.hessian]),
    )


def record_to_atoms(record: HessianRecord, units: Dict[str, str]) -> Atoms:
    """``ase.Atoms`` in ASE units (Å, eV, eV/Å, eV/Å²) from a record in ``units``.

    Energy and forces sit on a :class:`SinglePointCalculator`; ``info["hessian"]`` is
    the square Hessian ``(3N, 3N)`` or ``None``, ``info["kind"]`` and
    ``info["reaction"]`` the labels.
    """
    record = convert_record(record, units, ASE_UNITS)
    atoms = Atoms(
        numbers=np.asarray(record.numbers),
        positions=np.asarray(record.positions, dtype=np.float64),
        cell=np.asarray(record.cell, dtype=np.float64),
        pbc=record.pbc,
    )
    results = {}
    if record.energy is not None:
        results["energy"] = float(record.energy)
    if record.forces is not None:
        results["forces"] = np.asarray(record.forces, dtype=np.float64)
    atoms.calc = SinglePointCalculator(atoms, **results)
    hessian = record.hessian
    if hessian is not None and np.all(np.isnan(hessian)):
        hessian = None
    atoms.info[P.hessian] = hessian
    atoms.info[P.kind] = record.kind
    atoms.info[P.reaction] = int(record.reaction)
    return atoms


def record_from_atoms(
    atoms: Atoms, source: Optional[str] = None, index: Optional[int] = None
) -> HessianRecord:
    """Record (in ASE units) from ``ase.Atoms`` as :func:`record_to_atoms` makes them.

    Energy and forces are taken from ``atoms.calc.results``; ``info["hessian"]`` may be
    ``(3N, 3N)``, flat ``(9N²,)``, block layout ``(N², 3, 3)`` or absent/``None``.

    Raises:
        HessianDataError: no calculator results, or a Hessian of unknown shape.
    """
    results = getattr(atoms.calc, "results", None) or {}
    if "energy" not in results:
        raise HessianDataError(
            f"{where(source, index)}: Atoms has no energy; attach a SinglePointCalculator"
            " with energy and forces (eV, eV/Ang)"
        )
    n = len(atoms)
    hessian = atoms.info.get(P.hessian)
    if hessian is not None:
        hessian = hessian_to_square(np.asarray(hessian), n, source, index)
    return HessianRecord(
        numbers=atoms.numbers.copy(),
        positions=atoms.positions.copy(),
        energy=results["energy"],
        forces=results.get("forces"),
        hessian=hessian,
        kind=atoms.info.get(P.kind, "other"),
        reaction=atoms.info.get(P.reaction, -1),
        cell=np.asarray(atoms.cell[:], dtype=np.float64),
        pbc=atoms.pbc.copy(),
    )


def hessian_to_square(
    hessian: np.ndarray, n_atoms: int, source: Optional[str], index: Optional[int]
) -> np.ndarray:
    """A Hessian given flat ``(9N²,)``, square ``(3N, 3N)`` or as blocks ``(N², 3, 3)``
    → square ``(3N, 3N)``.

    Raises:
        HessianDataError: the shape fits none of these for ``n_atoms``.
    """
    n3 = 3 * n_atoms
    if hessian.shape == (n3, n3):
        return hessian
    if hessian.shape == (n3 * n3,):
        return hessian.reshape(n3, n3)
    if hessian.shape == (n_atoms * n_atoms, 3, 3):
        return blocks_to_square(hessian)
    raise HessianDataError(
        f"{where(source, index)}: Hessian has shape {hessian.shape}; for {n_atoms} atoms "
        f"expected {(n3, n3)}, {(n3 * n3,)} or {(n_atoms * n_atoms, 3, 3)}"
    )
