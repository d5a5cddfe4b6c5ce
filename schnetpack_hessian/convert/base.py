"""What every converter shares: the error class, the :class:`Source` a reader returns,
and helpers for labels and force conventions."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.data.units import derived_units, normalize_unit
from schnetpack_hessian.data.validation import HessianDataError

__all__ = [
    "ConversionError",
    "Source",
    "PathLike",
    "declared_units",
    "check_kind",
    "numbers_from_symbols",
    "force_sign_score",
]

PathLike = Union[str, Path]


class ConversionError(HessianDataError):
    """An input file cannot be converted (layout, units, labels); names file and index."""


@dataclass
class Source:
    """Records read from external files, with their declared units.

    Attributes:
        records: iterator of records (consumed once; streamed).
        units: units of the records (keys ``distance``, ``energy``, ``forces``,
            ``hessian``).
        metadata: file metadata to store (``source``, ``level_of_theory``, ...).
        total: number of records if known cheaply (for the progress bar).
        name: the input, for messages.
    """

    records: Iterator[HessianRecord]
    units: Dict[str, str]
    metadata: Dict[str, Any] = field(default_factory=dict)
    total: Optional[int] = None
    name: str = ""


def declared_units(
    fmt: str,
    fixed: Optional[Dict[str, str]] = None,
    energy_unit: Optional[str] = None,
    distance_unit: Optional[str] = None,
) -> Dict[str, str]:
    """Units of an input: fixed by its format, or declared by the user.

    Args:
        fmt: format name for messages.
        fixed: the units the format prescribes (``None``: the user must declare them).
        energy_unit: unit the user declared (``--energy-unit``).
        distance_unit: unit the user declared (``--distance-unit``).

    Returns:
        Normalised units (keys as :data:`~schnetpack_hessian.data.ASE_UNITS`).

    Raises:
        ConversionError: units undeclared, or contradicting the format.
    """
    if fixed is None:
        if energy_unit is None or distance_unit is None:
            raise ConversionError(
                f"{fmt} files do not fix their units: declare them with --energy-unit and "
                "--distance-unit (e.g. --energy-unit eV --distance-unit Ang); units are "
                "never guessed"
            )
        return derived_units(energy_unit, distance_unit)
    fixed = {k: normalize_unit(v) for k, v in fixed.items()}
    for name, given in (("energy", energy_unit), ("distance", distance_unit)):
        if given is not None and normalize_unit(given) != fixed[name]:
            raise ConversionError(
                f"{fmt} files store {name} in {fixed[name]}, but {given!r} was declared; "
                "drop the option (the stored units are declared in the output and "
                "converted when loading, e.g. HessianDataModule(property_units=...))"
            )
    return fixed


def check_kind(kind: Optional[str], source: str) -> Optional[str]:
    """Validate a ``--kind`` override.

    Raises:
        ConversionError: unknown label.
    """
    if kind is not None and kind not in P.KINDS:
        raise ConversionError(
            f"{source}: unknown kind {kind!r}, expected one of {P.KINDS}"
        )
    return kind


def numbers_from_symbols(
    symbols: Sequence[Any], source: str, index: Optional[int] = None
) -> np.ndarray:
    """Atomic numbers from element symbols (str/bytes) or numbers.

    Raises:
        ConversionError: unknown element.
    """
    from ase.data import atomic_numbers

    out = []
    for s in symbols:
        if isinstance(s, (bytes, np.bytes_)):
            s = s.decode()
        if isinstance(s, str):
            if s not in atomic_numbers or atomic_numbers[s] == 0:
                where = f", structure {index}" if index is not None else ""
                raise ConversionError(f"{source}{where}: unknown element {s!r}")
            out.append(atomic_numbers[s])
        else:
            out.append(int(s))
    return np.asarray(out, dtype=np.int64)


def force_sign_score(
    records: Sequence[HessianRecord], max_step: float = 0.3
) -> "tuple[float, int]":
    """Evidence whether stored "forces" are −dE/dR (score > 0) or dE/dR (score < 0).

    Uses neighbouring conformers of the same molecule (e.g. points of an IRC path or
    normal-mode displacements) closer than ``max_step`` (RMS displacement, distance
    unit): the trapezoid rule says ``E_b − E_a ≈ −½ (F_a + F_b)·(x_b − x_a)`` for
    forces, and with Hessians ``F_b − F_a ≈ −½ (H_a + H_b)(x_b − x_a)``.

    Returns:
        ``(score, n_votes)``: mean vote in ``[-1, 1]`` and how many pairs voted.
    """
    votes: List[float] = []
    for a, b in zip(records[:-1], records[1:]):
        if (
            a.forces is None
            or b.forces is None
            or not np.array_equal(a.numbers, b.numbers)
        ):
            continue
        dx = (np.asarray(b.positions) - np.asarray(a.positions)).ravel()
        step = float(np.sqrt(np.mean(dx**2)))
        if step == 0.0 or step > max_step:
            continue
        fa, fb = np.asarray(a.forces).ravel(), np.asarray(b.forces).ravel()
        work = -0.5 * float(np.dot(fa + fb, dx))
        de = float(b.energy) - float(a.energy)
        if abs(work) > 1e-12 and abs(de) > 1e-12:
            votes.append(float(np.sign(de * work)))
        if a.hessian is not None and b.hessian is not None:
            pred = -0.5 * (np.asarray(a.hessian) + np.asarray(b.hessian)) @ dx
            df = fb - fa
            norm = np.linalg.norm(pred) * np.linalg.norm(df)
            if norm > 1e-12:
                votes.append(float(np.dot(df, pred) / norm))
    return (float(np.mean(votes)) if votes else 0.0), len(votes)
