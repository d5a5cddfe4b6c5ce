"""Unit strings: normalisation, validation and conversion factors.

SchNetPack parses unit strings with :func:`schnetpack.units.convert_units`, which splits
at non-word characters and multiplies/divides ASE unit constants: ``"kcal/mol/Ang/Ang"``
is kcal / mol / Å / Å, but ``"eV/Ang^2"``, ``"eV/Å²"`` or ``"Hartree/Bohr**2"`` raise.
:func:`normalize_unit` rewrites such spellings into the form SchNetPack understands, so
that every unit stored in a file or passed to a data module is parseable by plain
SchNetPack as well.

SchNetPack (and with it torch) is imported on the first conversion, not with this
module: the data record uses it, and the generator must not load torch before tblite.
"""

import re
from typing import Dict, List, Optional, Tuple

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.validation import HessianDataError

__all__ = [
    "ASE_UNITS",
    "DIMENSIONS",
    "check_dimension",
    "check_units",
    "unit_dimension",
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

#: Physical dimension of each quantity, as powers ``(energy, length)``.
DIMENSIONS: Dict[str, Tuple[int, int]] = {
    "energy": (1, 0),
    "forces": (1, -1),
    P.hessian: (1, -2),
    "distance": (0, 1),
}
_DIMENSION_NAMES = {
    (1, 0): "energy",
    (1, -1): "energy/length",
    (1, -2): "energy/length^2",
    (0, 1): "length",
    (0, 0): "dimensionless",
}
#: Powers ``(energy, length)`` of the unit names :func:`normalize_unit` accepts;
#: ``mol`` is a count (dimensionless), other ASE units (time, charge, pressure, ...)
#: have no place in energy, forces, Hessians or positions.
_FACTOR_DIMENSIONS: Dict[str, Tuple[int, int]] = {
    **{e: (1, 0) for e in ("eV", "Hartree", "Ha", "kcal", "kJ", "J", "Ry", "cal")},
    **{d: (0, 1) for d in ("Ang", "Angs", "Angstrom", "Bohr", "a0", "nm", "m")},
    "mol": (0, 0),
}
#: The names of :data:`_FACTOR_DIMENSIONS` that SchNetPack's parser accepts (a test
#: checks each against it): a unit made of these alone is valid without asking
#: SchNetPack, which would load torch.
_PARSED_NAMES = frozenset(
    ("eV", "Hartree", "Ha", "kcal", "kJ", "J", "Ry", "Ang", "Angstrom", "Bohr", "nm")
    + ("m", "mol")
)

_ALIASES = {"Å": "Ang", "Angstrom": "Ang", "A": "Ang", "Ha": "Hartree", "au": "Hartree"}
_POWER = re.compile(r"^([^\W\d_]+)\^([23])$|^([^\W\d_]+)([²³])$")


def _spk_factor(source: str, target: str) -> float:
    """SchNetPack's factor from ``source`` to ``target`` units
    (:func:`schnetpack.units.convert_units`, imported here on first use)."""
    from schnetpack.units import convert_units

    return float(convert_units(source, target))


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
    if numerator and all(f in _PARSED_NAMES for f in numerator.split() + denominators):
        return normalized
    try:
        _spk_factor(normalized, "eV")
    except (AttributeError, Warning, KeyError, TypeError) as err:
        raise HessianDataError(
            f"unknown unit {unit!r} (normalised to {normalized!r}); use ASE unit names "
            "such as eV, Hartree, kcal, kJ, mol, Ang, Bohr, nm, e.g. 'kcal/mol/Ang/Ang'"
        ) from err
    return normalized


def _dimension_name(dim: Tuple[int, int]) -> str:
    if dim in _DIMENSION_NAMES:
        return _DIMENSION_NAMES[dim]
    return f"energy^{dim[0]} length^{dim[1]}"


def unit_dimension(unit: str) -> Tuple[int, int]:
    """Physical dimension of a unit string as powers ``(energy, length)``.

    ``"kcal/mol/Bohr"`` → ``(1, -1)``, ``"Hartree/Ang/Ang"`` → ``(1, -2)``.

    Args:
        unit: unit string (any spelling :func:`normalize_unit` accepts).

    Returns:
        ``(energy power, length power)``.

    Raises:
        HessianDataError: unknown unit, or one that is neither energy, length nor
            ``mol`` (e.g. ``fs``).
    """
    pieces = normalize_unit(unit).split("/")
    energy = length = 0
    for sign, factors in ((1, pieces[0].split()), (-1, pieces[1:])):
        for factor in factors:
            if factor not in _FACTOR_DIMENSIONS:
                raise HessianDataError(
                    f"unit {unit!r}: {factor!r} is neither an energy nor a length unit; "
                    "energies, forces, Hessians and positions take units such as eV, "
                    "Hartree, kcal/mol, Ang, Bohr"
                )
            e, d = _FACTOR_DIMENSIONS[factor]
            energy, length = energy + sign * e, length + sign * d
    return energy, length


def check_dimension(unit: str, quantity: str, where: str = "") -> str:
    """Normalise ``unit`` and check that it is a unit of ``quantity``.

    Args:
        unit: unit string, e.g. ``"kcal/mol/Bohr/Bohr"``.
        quantity: ``"energy"``, ``"forces"``, ``"hessian"`` or ``"distance"``.
        where: what declared the unit (option, file), prefixed to messages.

    Returns:
        The normalised unit string.

    Raises:
        HessianDataError: the unit has another dimension (expected vs got), e.g.
            ``"kcal/mol/Bohr"`` as a Hessian unit or ``"Ang"`` as an energy unit.
    """
    if quantity not in DIMENSIONS:
        raise HessianDataError(
            f"unknown quantity {quantity!r}, expected one of {list(DIMENSIONS)}"
        )
    normalized = normalize_unit(unit)
    got = unit_dimension(normalized)
    expected = DIMENSIONS[quantity]
    if got != expected:
        where = f"{where}: " if where else ""
        raise HessianDataError(
            f"{where}{quantity} unit {unit!r} has dimension {_dimension_name(got)}, "
            f"expected {_dimension_name(expected)} (e.g. "
            f"{ASE_UNITS[quantity].replace('/Ang/Ang', '/Ang^2')})"
        )
    return normalized


def check_units(
    property_units: Optional[Dict[str, str]],
    distance_unit: Optional[str] = None,
    where: str = "",
) -> "tuple[Dict[str, str], Optional[str]]":
    """Normalise ``property_units`` and ``distance_unit`` as a data module or dataset
    takes them, checking the dimension of energy, forces, Hessian and distance.

    Args:
        property_units: ``{property: unit}``; ``energy``, ``forces``, ``hessian``
            are checked for their dimension, other properties only parsed.
        distance_unit: unit of positions (``None``: the file's).
        where: what takes the units, prefixed to messages.

    Returns:
        ``(property_units, distance_unit)``, normalised.

    Raises:
        HessianDataError: unknown unit or a unit of the wrong dimension.
    """
    units = {
        k: (check_dimension(v, k, where) if k in DIMENSIONS else normalize_unit(v))
        for k, v in (property_units or {}).items()
    }
    if distance_unit:
        distance_unit = check_dimension(distance_unit, "distance", where)
    return units, distance_unit or None


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
        HessianDataError: a unit is unknown, the two have different dimensions
            (e.g. ``kcal/mol/Bohr`` to ``eV/Ang/Ang``), or only one is unit-less.
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
    if unit_dimension(source) != unit_dimension(target):
        raise HessianDataError(
            f"cannot convert {source!r} ({_dimension_name(unit_dimension(source))}) to "
            f"{target!r} ({_dimension_name(unit_dimension(target))}): different "
            "dimensions"
        )
    return _spk_factor(source, target)


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

    Raises:
        HessianDataError: a unit is unknown or of the wrong dimension.
    """
    energy = check_dimension(energy, "energy")
    distance = check_dimension(distance, "distance")
    return {
        "distance": distance,
        "energy": energy,
        "forces": (
            check_dimension(forces, "forces") if forces else f"{energy}/{distance}"
        ),
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
        HessianDataError: energy or distance unit missing, a unit unknown or of the
            wrong dimension.
    """
    for key in ("distance", "energy"):
        if not units.get(key):
            raise HessianDataError(f"no {key} unit declared")
    out = derived_units(units["energy"], units["distance"], units.get("forces"))
    if units.get(P.hessian):
        out[P.hessian] = check_dimension(units[P.hessian], P.hessian)
    return out
