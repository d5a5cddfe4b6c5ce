"""One structure with energy, forces, Hessian and labels: what readers yield and
writers consume, in the units declared next to it.

Readers of external formats yield :class:`HessianRecord` objects in the units of their
source (e.g. Hartree for OpenREACT), so that a conversion stores numbers unchanged and
round trips are exact; :func:`record_to_atoms` / :func:`record_from_atoms` translate to
and from ``ase.Atoms`` in ASE units (eV, Å).
"""

import functools
import hashlib
import numbers as _numbers
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from schnetpack_hessian import properties as P
from schnetpack_hessian.layout import as_square
from schnetpack_hessian.data.units import conversion_factor, ASE_UNITS
from schnetpack_hessian.data.validation import (
    HessianDataError,
    check_array,
    check_energy,
    check_target,
    is_missing,
    check_geometry,
    check_hessian,
    check_numbers,
    check_one_atom_hessian,
    prefix,
)

__all__ = [
    "HessianRecord",
    "ProductLabels",
    "Origin",
    "ReactionIds",
    "InputReactions",
    "Duplicates",
    "reaction_id",
    "reaction_names",
    "kind_code",
    "kind_name",
    "record_to_atoms",
    "record_from_atoms",
    "convert_record",
    "validate_record",
    "check_values",
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
            f"{prefix(source, index)}unknown kind {kind!r}, expected one of {P.KINDS}"
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
            f"{prefix(source, index)}kind code {code} is not in 0..{len(P.KINDS) - 1}"
        )
    return P.KINDS[code]


@dataclass(frozen=True)
class Origin:
    """Where a record comes from: input file, index within it, group or frame name.

    Prints as ``"<file>: structure <index> (<label>)"``, the prefix of every message
    about the record.
    """

    file: str
    index: int
    label: Optional[str] = None

    def __str__(self) -> str:
        label = f" ({self.label})" if self.label else ""
        return f"{self.file}: structure {self.index}{label}"


def reaction_id(label: Any, source: Any = None, index: Optional[int] = None):
    """A reaction label as an ``int`` id, or the name ``str`` it is given as.

    Integers and integral floats (``2.0``) are ids; strings of digits too; other
    strings are names (mapped to ids by :class:`ReactionIds`).

    Raises:
        HessianDataError: a non-integral number (``1.7``), a bool, or an empty name.
    """
    if isinstance(label, (bytes, np.bytes_)):
        label = label.decode()
    if isinstance(label, np.ndarray) and label.size == 1:
        label = label.reshape(-1)[0]
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, str):
        text = label.strip()
        if not text:
            raise HessianDataError(f"{prefix(source, index)}empty reaction label")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return text
        label = number
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, _numbers.Real):
        raise HessianDataError(
            f"{prefix(source, index)}reaction label {label!r} is neither an integer id "
            "nor a name"
        )
    if not np.isfinite(label) or int(label) != label:
        raise HessianDataError(
            f"{prefix(source, index)}reaction label {label!r} is not an integer; give "
            "integer ids or names (e.g. reaction=keto_enol_3)"
        )
    return int(label)


def reaction_names(metadata: Mapping[str, Any]) -> Dict[int, str]:
    """``{id: name}`` from a file's ``reactions`` metadata.

    Two forms exist: a list of names (index = id; OpenREACT, named labels) and a
    mapping ``{"<id>": {"name": ...}}`` (the generator's table).
    """
    table = metadata.get("reactions") or {}
    if isinstance(table, list):
        return {i: str(name) for i, name in enumerate(table)}
    out = {}
    for key, value in table.items():
        name = value.get("name") if isinstance(value, Mapping) else value
        if name is not None:
            out[int(key)] = str(name)
    return out


class ReactionIds:
    """Maps reaction labels to integer ids while records stream by.

    Names get ids in the order they first appear (after the names already known from
    ``metadata``); :meth:`metadata` gives them back as the ``reactions`` table.  Ids
    and new names do not mix in one file: an id could clash with a name's id.

    Args:
        metadata: file metadata whose ``reactions`` table declares known names.
    """

    def __init__(self, metadata: Optional[Mapping[str, Any]] = None):
        self.table = metadata.get("reactions") if metadata else None
        self.names: Dict[int, str] = reaction_names(metadata or {})
        self._ids = {name: i for i, name in self.names.items()}
        self._new = False
        self._max_id = -1

    def __call__(self, label: Any, source: Any = None, index: Optional[int] = None):
        """Integer id of ``label`` (an id or a name).

        Raises:
            HessianDataError: bad label, or ids mixed with new names.
        """
        value = reaction_id(label, source, index)
        if isinstance(value, int):
            if value < -1:
                raise HessianDataError(
                    f"{prefix(source, index)}reaction id {value} < -1 (-1 = none)"
                )
            if self._new and value >= 0 and value not in self.names:
                raise HessianDataError(
                    f"{prefix(source, index)}reaction id {value} among reaction names; "
                    "label all structures by name or all by id"
                )
            self._max_id = max(self._max_id, value)
            return value
        if value not in self._ids:
            if self._max_id >= 0 and not self._new and not self.names:
                raise HessianDataError(
                    f"{prefix(source, index)}reaction name {value!r} among integer "
                    "reaction ids; label all structures by name or all by id"
                )
            new = max(self.names, default=-1) + 1
            self._ids[value] = new
            self.names[new] = value
            self._new = True
        return self._ids[value]

    def metadata(self) -> Dict[str, Any]:
        """``{"reactions": table}`` when names were mapped here, else ``{}``."""
        if not self._new:
            return {}
        if isinstance(self.table, Mapping):
            table: Dict[str, Any] = dict(self.table)
            for i, name in self.names.items():
                table.setdefault(str(i), {"name": name})
            return {"reactions": table}
        return {
            "reactions": {str(i): {"name": n} for i, n in sorted(self.names.items())}
        }


class InputReactions:
    """Reaction ids made unique over several inputs, with their names kept.

    Each input's ids are local to it: two training files both number their reactions
    from 0.  :meth:`add` gives an input the offset that moves its ids past every id
    used so far when they would collide (inputs with disjoint ids, such as shards of
    one generator run, keep theirs); :meth:`shift` applies it.  An input whose ids are
    not known before reading (``ids=None``) is always shifted past the ids used so
    far.  :attr:`names` collects ``{new id: name}``.
    """

    def __init__(self):
        self.used: set = set()
        self.next = 0
        self.names: Dict[int, str] = {}
        #: ``(input, offset)`` of every input whose ids were shifted
        self.shifted: List[Tuple[str, int]] = []

    def add(
        self,
        name: str,
        ids: Optional[Iterable[int]] = None,
        names: Optional[Mapping[int, str]] = None,
    ) -> int:
        """Register input ``name`` with its reaction ``ids`` and ``{id: name}``.

        Returns:
            The offset to add to the input's ids (``0``: kept).
        """
        known = None if ids is None else {int(i) for i in ids if int(i) >= 0}
        known_names = {int(i): n for i, n in (names or {}).items()}
        if known is not None:
            known |= set(known_names)
        offset = self.next if known is None or known & self.used else 0
        if offset:
            self.shifted.append((name, offset))
        for i in known or ():
            self._use(i + offset)
        for i, n in known_names.items():
            self.names[i + offset] = n
        return offset

    def _use(self, reaction: int):
        self.used.add(reaction)
        self.next = max(self.next, reaction + 1)

    def shift(self, reaction: Any, offset: int) -> Any:
        """``reaction + offset`` for an id ≥ 0; names and ``-1`` (none) unchanged."""
        value = reaction_id(reaction)
        if not isinstance(value, int) or value < 0:
            return reaction
        self._use(value + offset)
        return value + offset

    def metadata(self) -> Dict[str, Any]:
        """``{"reactions": {"<id>": {"name": ...}}}`` if any names, else ``{}``."""
        if not self.names:
            return {}
        return {
            "reactions": {str(i): {"name": n} for i, n in sorted(self.names.items())}
        }


class Duplicates:
    """Counts structures given more than once (same atomic numbers and positions,
    bit for bit), remembering where each was first seen."""

    def __init__(self):
        self._seen: Dict[bytes, str] = {}
        self.count = 0
        #: up to five ``(first, again)`` descriptions
        self.examples: List[Tuple[str, str]] = []

    def __call__(self, numbers: np.ndarray, positions: np.ndarray, where: str):
        """Account for one structure found at ``where``."""
        key = hashlib.sha1(
            np.ascontiguousarray(numbers, dtype=np.int64).tobytes()
            + np.ascontiguousarray(positions, dtype=np.float64).tobytes()
        ).digest()
        if key not in self._seen:
            self._seen[key] = where
            return
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append((self._seen[key], where))

    def message(self, what: str) -> Optional[str]:
        """A sentence about the duplicates in ``what`` (``None`` if there are none)."""
        if not self.count:
            return None
        shown = "; ".join(f"{b} repeats {a}" for a, b in self.examples)
        return (
            f"{what}: {self.count} structure(s) repeat an earlier one (same atomic "
            f"numbers and positions), e.g. {shown}"
        )


class ProductLabels:
    """Curvature labels along given probes: ``products[:, p] = H @ probes[:, p]``.

    Attributes:
        probes: the probes ``(N, k, 3)`` (dimensionless; all zero: no label).
        products: the products ``(N, k, 3)`` [Hessian unit] (all NaN: no label).
    """

    def __init__(self, probes: np.ndarray, products: np.ndarray):
        self.probes = np.asarray(probes, dtype=np.float64)
        self.products = np.asarray(products, dtype=np.float64)

    @property
    def n_probes(self) -> int:
        """The number of labels ``k``."""
        return int(self.probes.shape[1])

    @classmethod
    def missing(cls, n_atoms: int, n_probes: int) -> "ProductLabels":
        """No labels: zero probes (so a model's products along them are zero, not
        NaN) and NaN products (masked out of the loss)."""
        shape = (n_atoms, n_probes, 3)
        return cls(np.zeros(shape), np.full(shape, np.nan))

    def check(
        self, n_atoms: int, source: Any = None, index: Optional[int] = None
    ) -> "ProductLabels":
        """The labels, checked: both ``(N, k, 3)``, finite probes, products finite
        or all NaN.

        Raises:
            HessianDataError: a wrong shape or non-finite values.
        """
        for name, value in (("probes", self.probes), ("products", self.products)):
            if value.ndim != 3 or value.shape[0] != n_atoms or value.shape[2] != 3:
                raise HessianDataError(
                    f"{prefix(source, index)}product-label {name} have shape "
                    f"{value.shape}, expected ({n_atoms}, k, 3)"
                )
        if self.probes.shape != self.products.shape:
            raise HessianDataError(
                f"{prefix(source, index)}product-label probes {self.probes.shape} and "
                f"products {self.products.shape} differ in shape"
            )
        if not np.isfinite(self.probes).all():
            raise HessianDataError(
                f"{prefix(source, index)}product-label probes are not finite"
            )
        nan = np.isnan(self.products)
        if not nan.all() and not np.isfinite(self.products).all():
            raise HessianDataError(
                f"{prefix(source, index)}product labels are partly NaN or infinite; "
                "missing labels are all NaN"
            )
        return self


@dataclass
class HessianRecord:
    """A structure with its reference data.

    Each of energy, forces and Hessian may be missing (``None``; readers may also
    give an all-NaN value, which :func:`validate_record` turns into ``None``), but not
    all three.  Stored files write a missing target as all NaN.

    Attributes:
        numbers: atomic numbers ``(N,)``.
        positions: Cartesian positions ``(N, 3)`` [distance unit].
        energy: total energy [energy unit], ``None`` if missing.
        forces: forces ``(N, 3)`` = −dE/dR [force unit], ``None`` if missing.
        hessian: square Hessian ``(3N, 3N)`` d²E/dR² [Hessian unit], ``None`` if missing.
        kind: one of :data:`properties.KINDS`.
        reaction: reaction id, ``-1`` if none (readers may give a name; writers map
            names to ids, see :class:`ReactionIds`).
        cell: unit cell ``(3, 3)`` [distance unit].
        pbc: periodic boundary conditions ``(3,)``.
        origin: input file, index and group/frame the record was read from.
        product_labels: Hessian-vector product labels along given probes (a
            teacher's, ``spkhess-generate label --probes``), ``None`` if none.
    """

    numbers: np.ndarray
    positions: np.ndarray
    energy: Optional[float]
    forces: Optional[np.ndarray]
    hessian: Optional[np.ndarray] = None
    kind: str = "other"
    reaction: Union[int, str] = -1
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    origin: Optional[Origin] = None
    product_labels: Optional[ProductLabels] = None

    @property
    def n_atoms(self) -> int:
        """Number of atoms N."""
        return int(len(self.numbers))

    def as_atoms(self) -> Atoms:
        """The bare geometry as ``ase.Atoms``: numbers, positions ``(N, 3)`` and cell
        ``(3, 3)`` [the record's distance unit; ASE expects Å] and pbc; no
        calculator, no labels.  What an ASE calculator or optimiser starts from;
        :func:`record_to_atoms` adds the labels in ASE units."""
        return Atoms(
            numbers=np.asarray(self.numbers),
            positions=np.asarray(self.positions, dtype=np.float64),
            cell=np.asarray(self.cell, dtype=np.float64),
            pbc=self.pbc,
        )


@functools.lru_cache(maxsize=64)
def _factor(unit: str, target: str) -> float:
    return conversion_factor(unit, target)


def _to(units: Mapping[str, Optional[str]], key: str, target: str) -> Optional[float]:
    """Factor from ``units[key]`` to ``target``; ``None`` when no unit is declared."""
    unit = units.get(key)
    return None if unit is None else _factor(unit, target)


def check_values(
    positions: Optional[np.ndarray],
    energy: Optional[float],
    hessian: Optional[np.ndarray],
    units: Optional[Mapping[str, Optional[str]]] = None,
    source: Any = None,
    index: Optional[int] = None,
    n_atoms: Optional[int] = None,
):
    """Values that poison a training although their shapes are right: coincident
    atoms or a collapsed geometry, a non-finite or absurd energy per atom, a nonzero
    one-atom Hessian (:func:`~.validation.check_geometry`,
    :func:`~.validation.check_energy`, :func:`~.validation.check_one_atom_hessian`).

    Run when records are validated (conversion, ``--check``, writing, reading) and
    on every structure a dataset loads for training.

    Args:
        positions: ``(N, 3)`` [``units["distance"]``]; ``None``: not loaded, the
            geometry is not checked (N from ``n_atoms``).
        energy: total energy [``units["energy"]``], ``None`` or NaN if absent.
        hessian: square ``(3N, 3N)`` or blocks ``(N², 3, 3)``
            [``units["hessian"]``], ``None`` or all NaN if absent.
        units: declared units (keys ``distance``, ``energy``, ``hessian``; default
            ASE units: Å, eV, eV/Å²); a property without a unit is not checked.
        source: file (or :class:`Origin`) for messages.
        index: structure index for messages.
        n_atoms: number of atoms N (default ``len(positions)``).

    Raises:
        HessianDataError: the first problem, naming file, structure and value.
    """
    units = ASE_UNITS if units is None else units
    n = len(positions) if n_atoms is None else int(n_atoms)
    to_ang = _to(units, "distance", "Ang")
    if positions is not None and to_ang is not None:
        check_geometry(np.asarray(positions) * to_ang, source, index)
    to_ev = _to(units, "energy", "eV")
    if not is_missing(energy) and to_ev is not None:
        check_energy(float(np.asarray(energy).reshape(-1)[0]) * to_ev, n, source, index)
    to_ev_ang2 = _to(units, P.hessian, "eV/Ang/Ang")
    if n == 1 and hessian is not None and to_ev_ang2 is not None:
        check_one_atom_hessian(np.asarray(hessian) * to_ev_ang2, source, index)


def validate_record(
    record: HessianRecord,
    source: Optional[str] = None,
    index: Optional[int] = None,
    rtol: float = 1e-2,
    symmetrize: bool = False,
    units: Optional[Mapping[str, str]] = None,
) -> "tuple[HessianRecord, float]":
    """Check shapes against the atom count, finite values, elements, labels, symmetry
    and the values that poison training (:func:`check_values`).

    Energy, forces and Hessian may each be missing (``None`` or all NaN; a partly NaN
    one is an error), but a structure with none of them is refused.

    Args:
        record: the structure.
        source: file name for messages (default: the record's :class:`Origin`).
        index: structure index for messages.
        rtol: symmetry tolerance, see :func:`~.validation.check_hessian`.
        symmetrize: replace the Hessian by ``(H + Hᵀ)/2``.
        units: the record's units (keys as :data:`~.units.ASE_UNITS`; default ASE
            units: Å, eV, eV/Å²).

    Returns:
        ``(record, asymmetry)``: the normalised record (arrays as numpy; energy, forces
        and Hessian ``None`` when missing; the Hessian possibly symmetrised; reaction an
        ``int`` id or a name) and the Hessian's relative asymmetry.

    Raises:
        HessianDataError: on any problem, naming file, structure and problem.
    """
    if source is None and index is None:
        source = record.origin
    numbers = np.asarray(record.numbers)
    check_numbers(numbers, source, index)
    n = len(numbers)
    positions = check_array("positions", record.positions, (n, 3), source, index)
    energy = check_target(
        "energy",
        None if record.energy is None else np.asarray(record.energy).reshape(-1),
        (1,),
        source,
        index,
    )
    forces = check_target("forces", record.forces, (n, 3), source, index)
    hessian, asym = check_hessian(
        record.hessian, n, source, index, rtol=rtol, fix_symmetry=symmetrize
    )
    if energy is None and forces is None and hessian is None:
        raise HessianDataError(
            f"{prefix(source, index)}the structure has no energy, no forces and no "
            "Hessian: nothing to train on"
        )
    check_values(positions, energy, hessian, units, source, index)
    kind_code(record.kind, source, index)
    reaction = reaction_id(record.reaction, source, index)
    cell = check_array("cell", record.cell, (3, 3), source, index)
    pbc = np.asarray(record.pbc, dtype=bool).reshape(3)
    if record.product_labels is not None:
        record.product_labels.check(n, source, index)
    return (
        replace(
            record,
            numbers=numbers.astype(np.int64),
            positions=positions,
            energy=None if energy is None else float(energy[0]),
            forces=forces,
            hessian=hessian,
            reaction=reaction,
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
    f = {k: _factor(units[k], target[k]) for k in ASE_UNITS}

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
        product_labels=(
            None
            if record.product_labels is None
            else ProductLabels(
                record.product_labels.probes,
                scale(record.product_labels.products, f[P.hessian]),
            )
        ),
    )


def record_to_atoms(
    record: HessianRecord,
    units: Dict[str, str],
    names: Optional[Mapping[int, str]] = None,
) -> Atoms:
    """``ase.Atoms`` in ASE units (Å, eV, eV/Å, eV/Å²) from a record in ``units``.

    Energy and forces sit on a :class:`SinglePointCalculator` (a missing one is not
    among its results, so ``get_potential_energy()`` / ``get_forces()`` raise
    ASE's ``PropertyNotImplementedError``); ``info["hessian"]`` is the square Hessian
    ``(3N, 3N)`` or ``None``, ``info["kind"]`` and
    ``info["reaction"]`` the labels; with ``names`` (see :func:`reaction_names`)
    ``info["reaction_name"]`` is the reaction's name (``None`` if it has none).
    """
    record = convert_record(record, units, ASE_UNITS)
    atoms = record.as_atoms()
    results = {}
    if not is_missing(record.energy):
        results["energy"] = float(record.energy)
    if not is_missing(record.forces):
        results["forces"] = np.asarray(record.forces, dtype=np.float64)
    atoms.calc = SinglePointCalculator(atoms, **results)
    hessian = record.hessian
    if hessian is not None and np.all(np.isnan(hessian)):
        hessian = None
    atoms.info[P.hessian] = hessian
    atoms.info[P.kind] = record.kind
    atoms.info[P.reaction] = int(record.reaction)
    if names is not None:
        atoms.info[P.reaction_name] = names.get(int(record.reaction))
    return atoms


def record_from_atoms(
    atoms: Atoms, source: Optional[str] = None, index: Optional[int] = None
) -> HessianRecord:
    """Record (in ASE units) from ``ase.Atoms`` as :func:`record_to_atoms` makes them.

    Energy and forces are taken from ``atoms.calc.results`` (either may be absent:
    ``None``); ``info["hessian"]`` may be ``(3N, 3N)``, flat ``(9N²,)``, block layout
    ``(N², 3, 3)`` or absent/``None``.

    Raises:
        HessianDataError: no energy, forces or Hessian at all, or a Hessian of unknown
            shape.
    """
    results = getattr(atoms.calc, "results", None) or {}
    if (
        "energy" not in results
        and "forces" not in results
        and atoms.info.get(P.hessian) is None
    ):
        raise HessianDataError(
            f"{prefix(source, index)}Atoms has no energy, forces or Hessian; attach a "
            "SinglePointCalculator with energy and forces (eV, eV/Ang) or set "
            "info['hessian'] (eV/Ang/Ang)"
        )
    n = len(atoms)
    hessian = atoms.info.get(P.hessian)
    if hessian is not None:
        hessian = hessian_to_square(np.asarray(hessian), n, source, index)
    return HessianRecord(
        numbers=atoms.numbers.copy(),
        positions=atoms.positions.copy(),
        energy=results.get("energy"),
        forces=results.get("forces"),
        hessian=hessian,
        kind=atoms.info.get(P.kind, "other"),
        reaction=atoms.info.get(P.reaction, -1),
        cell=np.asarray(atoms.cell[:], dtype=np.float64),
        pbc=atoms.pbc.copy(),
    )


def hessian_to_square(
    hessian: np.ndarray,
    n_atoms: int,
    source: Optional[str] = None,
    index: Optional[int] = None,
) -> np.ndarray:
    """:func:`~schnetpack_hessian.layout.as_square` with the file and structure named
    in its error.

    Raises:
        HessianDataError: the shape fits none of the layouts for ``n_atoms``.
    """
    try:
        return as_square(hessian, n_atoms)
    except ValueError as err:
        raise HessianDataError(f"{prefix(source, index)}{err}") from err
