"""Unit strings: normalisation, validation and conversion factors.

SchNetPack parses unit strings with :func:`schnetpack.units.convert_units`, which splits
at non-word characters and multiplies/divides ASE unit constants: ``"kcal/mol/Ang/Ang"``
is kcal / mol / Å / Å, but ``"eV/Ang^2"``, ``"eV/Å²"`` or ``"Hartree/Bohr**2"`` raise.
:func:`normalize_unit` rewrites such spellings into the form SchNetPack understands, so
that every unit stored in a file or passed to a data module is parseable by plain
SchNetPack as well.
"""

import re
from typing import Dict, List, Optional

import schnetpack as spk

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.validation import HessianDataError

__all__ = [
    "ASE_UNITS",
    "normalize_unit",
    "conversion_factor",
    "derived_units",
    "complete_units",
]

#: Units of the ASE convention (what :func:`~schnetpack_hessian.data.iread` returns).
ASE_UNITS: Dict[str, str] = {
    "distance": "Ang",
    "energy": P.DEFAULT_UNITS["energy"],
    "forces": P.DEFAULT_UNITS["forces"],
    P.hessian: P.DEFAULT_UNITS[P.hessian],
}

_ALIASES = {"Å": "Ang", "Angstrom": "Ang", "A": "Ang", "Ha": "Hartree", "au": "Hartree"}
_POWER = re.compile(r"^([^\W\d_]+)\^([23])$|^([^\W\d_]+)([²³])$")


def normalize_unit(unit: Optional[str]) -> Optional[str]:
    """Rewrite a unit string into SchNetPack's ``a/b/c`` form and check it parses.

    ``"eV/Å²"``, ``"eV/Ang^2"``, ``"Hartree/Bohr**2"`` → ``"eV/Ang/Ang"``,
    ``"Hartree/Bohr/Bohr"``.  ``"A"`` means Ångström here (SchNetPack refuses it as
    ambiguous with Ampere).  ``None`` (unit-less) is returned unchanged.

    Args:
        unit: unit string, e.g. ``"kcal/mol/Ang/Ang"``.

    Returns:
        The normalised unit string.

    Raises:
        HessianDataError: the string contains an unknown unit.
    """
    if unit is None:
        return None
    if not isinstance(unit, str) or not unit.strip():
        raise HessianDataError(f"invalid unit {unit!r}: expected a non-empty string")
    pieces = unit.strip().split("/")
    numerator = " ".join(_expand(pieces[0]))
    denominators = [f for piece in pieces[1:] for f in _expand(piece)]
    normalized = "/".join([numerator] + denominators)
    try:
        spk.units.convert_units(normalized, "eV")
    except (AttributeError, Warning, KeyError, TypeError) as err:
        raise HessianDataError(
            f"unknown unit {unit!r} (normalised to {normalized!r}); use ASE unit names "
            "such as eV, Hartree, kcal, kJ, mol, Ang, Bohr, nm, e.g. 'kcal/mol/Ang/Ang'"
        ) from err
    return normalized


def _expand(piece: str) -> List[str]:
    """``"Ang^2"`` → ``["Ang", "Ang"]``, ``"kJ mol"`` → ``["kJ", "mol"]``; aliases."""
    factors: List[str] = []
    for factor in re.split(r"[\s*]+", piece.replace("**", "^").strip()):
        if not factor:
            continue
        match = _POWER.match(factor)
        if match:
            base = match.group(1) or match.group(3)
            power = int(match.group(2) or {"²": "2", "³": "3"}[match.group(4)])
            factors.extend([_ALIASES.get(base, base)] * power)
        else:
            factors.append(_ALIASES.get(factor, factor))
    return factors


def conversion_factor(source: Optional[str], target: Optional[str]) -> float:
    """Factor that converts a value in ``source`` units to ``target`` units.

    Args:
        source: unit the value is stored in (``None``: unit-less).
        target: unit wanted (``None``: unit-less).

    Returns:
        ``value_target = factor * value_source``.

    Raises:
        HessianDataError: a unit is unknown, or only one of them is unit-less.
    """
    if source is None and target is None:
        return 1.0
    if source is None or target is None:
        raise HessianDataError(
            f"cannot convert between units {source!r} and {target!r}"
        )
    source, target = normalize_unit(source), normalize_unit(target)
    if source == target:
        return 1.0
    return float(spk.units.convert_units(source, target))


def derived_units(
    energy: str, distance: str = "Ang", forces: Optional[str] = None
) -> Dict[str, str]:
    """Units of energy, forces and Hessian derived from energy and distance units.

    Args:
        energy: energy unit, e.g. ``"Hartree"`` or ``"kcal/mol"``.
        distance: distance unit of positions and derivatives.
        forces: force unit if it is not ``energy/distance``.

    Returns:
        ``{"distance", "energy", "forces", "hessian"}`` → normalised unit strings.
    """
    energy = normalize_unit(energy)
    distance = normalize_unit(distance)
    return {
        "distance": distance,
        "energy": energy,
        "forces": normalize_unit(forces) if forces else f"{energy}/{distance}",
        P.hessian: f"{energy}/{distance}/{distance}",
    }


def complete_units(units: Dict[str, Optional[str]]) -> Dict[str, str]:
    """Fill in the units a source leaves out: forces ``energy/distance`` and Hessian
    ``energy/distance/distance`` (the one place for these fallbacks).

    Args:
        units: keys ``distance`` and ``energy`` required; ``forces``, ``hessian``
            optional (absent or ``None``: derived).

    Returns:
        All four units, normalised.

    Raises:
        HessianDataError: energy or distance unit missing.
    """
    for key in ("distance", "energy"):
        if not units.get(key):
            raise HessianDataError(f"no {key} unit declared")
    out = derived_units(units["energy"], units["distance"], units.get("forces"))
    if units.get(P.hessian):
        out[P.hessian] = normalize_unit(units[P.hessian])
    return out
