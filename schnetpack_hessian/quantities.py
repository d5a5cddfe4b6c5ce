"""Numbers that carry their physical dimension, and the unit systems they are written in.

The evaluation computes in ASE units (eV, eV/Å, eV/Å², cm⁻¹) and writes in two unit
systems: the study's (kcal/mol, kcal/mol/Å, kcal/mol/Å²) and eV. A :class:`Quantity`
is a ``float`` in ASE units that knows its :class:`Dimension`, so converting it needs
no table of key names: ``Quantity(0.1, Dimension.ENERGY).to("kcal/mol")`` is 2.306.
Being a ``float``, it goes into numpy, ``json`` and ``csv`` as a number; arithmetic on
it gives plain floats, so a derived number is typed again where it is declared.

A :class:`Schema` declares the keys of one kind of record (a structure's row, a pooled
set of statistics) and each key's dimension, and builds records whose physical values
are quantities. A key declared without a dimension holds a label, an index, a count or
a fraction of counts: a decision written next to the key, never a default.
"""

from dataclasses import dataclass
from enum import Enum
from typing import Dict, Iterator, Mapping, Optional

from ase import units

__all__ = [
    "Dimension",
    "Unit",
    "UNIT_SYSTEMS",
    "Quantity",
    "Schema",
    "in_units",
    "dimensions_of",
]

_KCAL = units.kcal / units.mol  # eV per kcal/mol


class Dimension(str, Enum):
    """Physical dimension of an evaluation number; the value is its name in files."""

    ENERGY = "energy"
    FORCE = "force"
    HESSIAN = "hessian"
    WAVENUMBER = "cm-1"
    DIMENSIONLESS = "1"

    def unit(self, system: str) -> "Unit":
        """The unit of this dimension in ``system`` (see :data:`UNIT_SYSTEMS`).

        Raises:
            KeyError: an unknown unit system.
        """
        if system not in UNIT_SYSTEMS:
            raise KeyError(
                f"unknown unit system {system!r}, expected one of {list(UNIT_SYSTEMS)}"
            )
        return UNIT_SYSTEMS[system][self]

    def factor(self, system: str) -> float:
        """Factor from ASE units to ``system``."""
        return self.unit(system).factor

    def label(self, system: str) -> str:
        """ASCII unit label in ``system``, as in file headers (``kcal/mol/Ang^2``)."""
        return self.unit(system).label


@dataclass(frozen=True)
class Unit:
    """One dimension's unit in one unit system.

    Attributes:
        label: ASCII label for files (``kcal/mol/Ang``).
        symbol: typographic label for tables and plots (``kcal/mol/Å``).
        factor: multiplies a value in ASE units.
    """

    label: str
    symbol: str
    factor: float


#: unit system → dimension → unit.
UNIT_SYSTEMS: Dict[str, Dict[Dimension, Unit]] = {
    "kcal/mol": {
        Dimension.ENERGY: Unit("kcal/mol", "kcal/mol", 1.0 / _KCAL),
        Dimension.FORCE: Unit("kcal/mol/Ang", "kcal/mol/Å", 1.0 / _KCAL),
        Dimension.HESSIAN: Unit("kcal/mol/Ang^2", "kcal/mol/Å²", 1.0 / _KCAL),
        Dimension.WAVENUMBER: Unit("cm^-1", "cm⁻¹", 1.0),
        Dimension.DIMENSIONLESS: Unit("1", "1", 1.0),
    },
    "eV": {
        Dimension.ENERGY: Unit("eV", "eV", 1.0),
        Dimension.FORCE: Unit("eV/Ang", "eV/Å", 1.0),
        Dimension.HESSIAN: Unit("eV/Ang^2", "eV/Å²", 1.0),
        Dimension.WAVENUMBER: Unit("cm^-1", "cm⁻¹", 1.0),
        Dimension.DIMENSIONLESS: Unit("1", "1", 1.0),
    },
}


class Quantity(float):
    """A number in ASE units (eV, eV/Å, eV/Å², cm⁻¹) with its dimension.

    Args:
        value: the number in ASE units (NaN where undefined).
        dimension: its :class:`Dimension` (or the dimension's name).
    """

    __slots__ = ("dimension",)
    dimension: Dimension

    def __new__(cls, value: float, dimension: Dimension) -> "Quantity":
        self = super().__new__(cls, value)
        self.dimension = Dimension(dimension)
        return self

    def __getnewargs__(self):
        return float(self), self.dimension

    def __repr__(self) -> str:
        return f"Quantity({float(self)!r}, {self.dimension.value!r})"

    def to(self, system: str) -> float:
        """The value in ``system`` (see :data:`UNIT_SYSTEMS`), a plain float."""
        return float(self) * self.dimension.factor(system)


def in_units(value: object, system: str) -> object:
    """Copy of ``value`` with every :class:`Quantity` in ``system``.

    Mappings become dicts and lists or tuples become lists, converted item by item;
    anything else (labels, counts, plain floats declared without a dimension) is
    returned as it is.
    """
    if isinstance(value, Quantity):
        return value.to(system)
    if isinstance(value, Mapping):
        return {k: in_units(v, system) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [in_units(v, system) for v in value]
    return value


class Schema:
    """The declared keys of one kind of record and the dimension of each.

    Args:
        name: what a record is, for messages (``"structure row"``).
        fields: key → :class:`Dimension`, or None for a label, an index, a count or a
            fraction of counts, in the order records list them.
    """

    def __init__(self, name: str, fields: Mapping[str, Optional[Dimension]]):
        self.name = name
        self.fields: Dict[str, Optional[Dimension]] = dict(fields)

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __repr__(self) -> str:
        return f"Schema({self.name!r}, {list(self.fields)})"

    @property
    def dimensions(self) -> Dict[str, Dimension]:
        """The keys that hold quantities and their dimensions."""
        return {k: d for k, d in self.fields.items() if d is not None}

    def __call__(self, **values: object) -> Dict[str, object]:
        """A record (or part of one) of the given values, in their given order.

        A value of a key with a dimension becomes a :class:`Quantity` of it; others
        are kept as they are.

        Raises:
            KeyError: a key the schema does not declare.
            TypeError: a quantity under a key declared without a dimension, or one of
                another dimension than declared.
        """
        record: Dict[str, object] = {}
        for key, value in values.items():
            if key not in self.fields:
                raise KeyError(
                    f"{self.name}: undeclared key {key!r}; declare it with its "
                    f"dimension (None for labels and counts), expected one of "
                    f"{list(self.fields)}"
                )
            dim = self.fields[key]
            if isinstance(value, Quantity) and value.dimension != dim:
                raise TypeError(
                    f"{self.name}: {key!r} is declared {dim and dim.value!r}, got a "
                    f"quantity of dimension {value.dimension.value!r}"
                )
            record[key] = value if dim is None else Quantity(value, dim)
        return record


def dimensions_of(*schemas: Schema) -> Dict[str, Dimension]:
    """Every dimensioned key of ``schemas``, in order of first declaration.

    Raises:
        ValueError: two schemas declare one key with different dimensions.
    """
    out: Dict[str, Dimension] = {}
    for schema in schemas:
        for key, dim in schema.dimensions.items():
            if out.setdefault(key, dim) != dim:
                raise ValueError(
                    f"{key!r} is {out[key].value!r} in one schema and {dim.value!r} "
                    f"in {schema.name!r}"
                )
    return out
