"""The storage form of a structure shared by the ``.db`` and ``.h5`` backends.

Both backends store, per structure, SchNetPack's property arrays: ``energy`` ``(1,)``,
``forces`` ``(N, 3)``, ``hessian`` ``(N², 3, 3)``, ``kind`` ``(1,)`` int64 (index into
:data:`properties.KINDS`) and ``reaction`` ``(1,)`` int64, next to the structure
(``numbers``, ``positions``, ``cell``, ``pbc``).  A structure without energy, forces or
Hessian stores that property as all NaN (one convention for the three targets); a
partly NaN one is an error.
"""

import logging
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

import numpy as np

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.record import (
    HessianRecord,
    ProductLabels,
    check_values,
    kind_code,
    kind_name,
)
from schnetpack_hessian.data.validation import HessianDataError, is_missing, prefix
from schnetpack_hessian.layout import blocks_to_square, square_to_blocks

if TYPE_CHECKING:  # torch is imported by the datasets that make tensors, not here
    import torch

__all__ = [
    "PROPERTIES",
    "LABELS",
    "property_unit_dict",
    "follow_hessian_unit",
    "record_to_storage",
    "storage_to_record",
    "check_stored",
    "check_loaded",
    "native_byte_order",
    "loaded_array",
    "to_tensor",
    "base_metadata",
]

#: Properties every training file stores, in order.
PROPERTIES = ("energy", "forces", P.hessian, P.kind, P.reaction)
#: Integer label properties (unit-less, kept as int64 when loaded).
LABELS = (P.kind, P.reaction)
#: Human-readable description of the Hessian layout stored in the metadata.
HESSIAN_LAYOUT = "(N*N, 3, 3) blocks; block i*N+j = d2E/dR_i dR_j; all NaN = missing"
#: Magnitudes a stored float has (besides 0 and NaN = missing): a float64 of real
#: data read in the other byte order takes its exponent from the low mantissa bits
#: and falls outside with a probability of ~96% per value (-31.5 eV reads as 4e-317).
_PLAUSIBLE_FLOAT = (1e-12, 1e12)
#: Integer labels (kind codes, reaction ids) are small; byte-reversed ones are not.
_PLAUSIBLE_INT = 2**31

log = logging.getLogger(__name__)
_warned_byte_order: set = set()


def property_unit_dict(
    units: Dict[str, str], product_labels: bool = False
) -> Dict[str, Optional[str]]:
    """SchNetPack's ``_property_unit_dict`` for ``units`` (keys as in ``ASE_UNITS``);
    with ``product_labels`` also the label probes (no unit) and products (the
    Hessian's unit)."""
    out: Dict[str, Optional[str]] = {
        "energy": units["energy"],
        "forces": units["forces"],
        P.hessian: units[P.hessian],
        P.kind: None,
        P.reaction: None,
    }
    if product_labels:
        out[P.hessian_label_probes] = None
        out[P.hessian_label_hvp] = units[P.hessian]
    return out


def follow_hessian_unit(
    units: Dict[str, Optional[str]],
    conversions: Dict[str, float],
    property_units: Optional[Mapping[str, str]],
) -> None:
    """Product labels load in the Hessian's unit: when ``property_units`` converts
    the Hessian and names no unit of its own for the products, they get the
    Hessian's conversion (in place)."""
    if P.hessian_label_hvp not in units or P.hessian not in units:
        return
    if property_units and P.hessian_label_hvp in property_units:
        return
    conversions[P.hessian_label_hvp] = conversions.get(P.hessian, 1.0)
    units[P.hessian_label_hvp] = units[P.hessian]


def base_metadata(
    units: Dict[str, str],
    metadata: Optional[Dict[str, Any]] = None,
    product_labels: Optional[int] = None,
) -> Dict[str, Any]:
    """File metadata as SchNetPack writes it plus ours.

    ``_property_unit_dict``, ``_distance_unit`` and ``atomrefs`` (SchNetPack's keys),
    ``kinds`` (the label of each ``kind`` code), ``hessian_layout`` and every entry of
    ``metadata`` (e.g. ``source``, ``level_of_theory``; an ``atomrefs`` entry there
    replaces the empty default).
    """
    md: Dict[str, Any] = {
        "_property_unit_dict": property_unit_dict(units, bool(product_labels)),
        "_distance_unit": units["distance"],
        "atomrefs": {},
        "kinds": list(P.KINDS),
        "hessian_layout": HESSIAN_LAYOUT,
    }
    for key, value in (metadata or {}).items():
        if key.startswith("_"):
            continue
        md[key] = value
    if product_labels:
        md["product_labels"] = dict(md.get("product_labels") or {}, k=product_labels)
    return md


def record_to_storage(
    record: HessianRecord,
    dtype=np.float64,
    product_labels: Optional[int] = None,
    source: Any = None,
    index: Optional[int] = None,
) -> Dict[str, np.ndarray]:
    """Storage arrays of a validated record (Hessian in block layout; a missing
    energy, forces or Hessian all NaN).

    Args:
        record: a record that passed :func:`~.record.validate_record`.
        dtype: floating dtype of ``forces`` and ``hessian``.
        product_labels: the file's number of product labels per structure (None:
            the file stores none); a record without labels stores missing ones.
        source, index: the file and structure named in errors.

    Raises:
        HessianDataError: the record's labels are not ``product_labels`` many.
    """
    n = record.n_atoms
    energy = np.nan if record.energy is None else record.energy
    if record.forces is None:
        forces = np.full((n, 3), np.nan, dtype=dtype)
    else:
        forces = np.asarray(record.forces, dtype=dtype)
    if record.hessian is None:
        hessian = np.full((n * n, 3, 3), np.nan, dtype=dtype)
    else:
        hessian = np.ascontiguousarray(square_to_blocks(np.asarray(record.hessian)))
    return {
        "numbers": np.asarray(record.numbers, dtype=np.int64),
        "positions": np.asarray(record.positions, dtype=np.float64),
        "cell": np.asarray(record.cell, dtype=np.float64),
        "pbc": np.asarray(record.pbc, dtype=bool),
        "energy": np.array([energy], dtype=np.float64),
        "forces": forces,
        P.hessian: hessian.astype(dtype, copy=False),
        P.kind: np.array([kind_code(record.kind)], dtype=np.int64),
        P.reaction: np.array([record.reaction], dtype=np.int64),
        **_label_storage(record, product_labels, source, index),
    }


def _label_storage(
    record: HessianRecord,
    product_labels: Optional[int],
    source: Any = None,
    index: Optional[int] = None,
) -> Dict[str, np.ndarray]:
    """The product-label arrays of a record in a file with ``product_labels`` each."""
    labels = record.product_labels
    if product_labels is None:
        if labels is not None:
            raise HessianDataError(
                f"{prefix(source, index)}the structure has product labels, but the file "
                "is written without (RecordWriter(product_labels=k))"
            )
        return {}
    if labels is None:
        labels = ProductLabels.missing(record.n_atoms, product_labels)
    if labels.n_probes != product_labels:
        raise HessianDataError(
            f"{prefix(source, index)}the structure has {labels.n_probes} product "
            f"labels, the file {product_labels}"
        )
    return {
        P.hessian_label_probes: np.ascontiguousarray(labels.probes),
        P.hessian_label_hvp: np.ascontiguousarray(labels.products),
    }


def _implausible(array: np.ndarray) -> bool:
    """True if some entry is one no real stored value has (NaN means "missing")."""
    if array.dtype.kind in "iu":
        return bool((np.abs(array.astype(np.float64)) >= _PLAUSIBLE_INT).any())
    with np.errstate(all="ignore"):
        size = np.abs(array)
    lo, hi = _PLAUSIBLE_FLOAT
    return bool(((size != 0) & ~np.isnan(size) & ~((size >= lo) & (size <= hi))).any())


def native_byte_order(
    data: Mapping[str, Any], source: Optional[str] = None, index: Optional[int] = None
) -> Dict[str, Any]:
    """The arrays of one stored structure, byte-reversed if they were written in the
    other byte order.

    ASE's ``.db`` stores an array's raw bytes and its dtype name without the byte
    order, so a file written from big-endian arrays (``>f8``) reads back as garbage
    (an energy of -31.5 eV as 4e-317).  A structure's numeric arrays are taken as
    byte-reversed when, together, some of their values are implausible (nonzero
    magnitudes outside 1e-12..1e12, integers beyond 2³¹) and all byte-reversed values
    are plausible; they are then corrected, with a warning once per file.

    Args:
        data: property name → stored array (other values pass unchanged).
        source: file for the warning.
        index: structure index for the warning.

    Returns:
        A new dict with the arrays in the native byte order.
    """
    numeric = {
        k: np.asarray(v)
        for k, v in data.items()
        if isinstance(v, np.ndarray)
        and v.dtype.kind in "fiu"
        and v.dtype.itemsize > 1
        and v.size
    }
    if not any(map(_implausible, numeric.values())):
        return dict(data)
    swapped = {k: v.byteswap() for k, v in numeric.items()}
    if any(map(_implausible, swapped.values())):
        return dict(data)
    if source not in _warned_byte_order:
        _warned_byte_order.add(source)
        log.warning(
            "%sthe arrays %s were stored in the other byte order (written from "
            "big-endian arrays?); their bytes are reversed on loading, as those of "
            "every such structure in this file",
            prefix(source, index),
            sorted(swapped),
        )
    return {**data, **swapped}


def check_stored(
    name: str,
    value: Any,
    n_atoms: int,
    source: Optional[str] = None,
    index: Optional[int] = None,
) -> Any:
    """Check a stored ``energy`` (one value), ``forces`` ``(N, 3)`` or ``hessian``
    ``(N², 3, 3)`` as it is loaded: shape against the atom count, finite values or all
    NaN (missing; checked on the whole array).  Other properties pass unchecked.

    Args:
        name: property name.
        value: the stored array (numpy).
        n_atoms: atoms of the structure.
        source: file for messages.
        index: structure index for messages.

    Returns:
        ``value`` unchanged.

    Raises:
        HessianDataError: wrong shape, infinite values or a partly NaN target.
    """
    shapes = {
        "energy": (1,),
        "forces": (n_atoms, 3),
        P.hessian: (n_atoms * n_atoms, 3, 3),
    }
    if name not in shapes:
        return value
    shape = tuple(value.shape)
    if shape != shapes[name] and not (name == "energy" and value.size == 1):
        raise HessianDataError(
            f"{prefix(source, index)}stored {name} has shape {shape}, expected "
            f"{shapes[name]} for {n_atoms} atoms"
        )
    array = np.asarray(value)
    nan = np.isnan(array)
    if nan.all():
        return value
    if nan.any():
        what = "Hessian" if name == P.hessian else name
        raise HessianDataError(
            f"{prefix(source, index)}stored {what} is partially NaN "
            f"({int(nan.sum())} of {nan.size} entries); a missing {what} is all NaN"
        )
    if not np.isfinite(array).all():
        raise HessianDataError(
            f"{prefix(source, index)}stored {name} contains NaN or infinite values"
        )
    return value


def storage_to_record(
    data: Dict[str, Any], source: Optional[str] = None, index: Optional[int] = None
) -> HessianRecord:
    """Record from storage arrays (labels default to ``other``/-1 when absent; an
    all-NaN energy, forces or Hessian becomes ``None``).

    Raises:
        HessianDataError: stored forces or Hessian of the wrong shape, or a partly
            NaN target (see :func:`check_stored`).
    """
    n = len(data["numbers"])
    for name in ("energy", "forces", P.hessian):
        if data.get(name) is not None:
            check_stored(name, np.asarray(data[name]), n, source, index)
    hessian = data.get(P.hessian)
    if hessian is not None:
        hessian = np.asarray(hessian)
        if np.all(np.isnan(hessian)):
            hessian = None
        else:
            hessian = blocks_to_square(hessian)
    kind = data.get(P.kind)
    reaction = data.get(P.reaction)
    energy = data.get("energy")
    forces = data.get("forces")
    return HessianRecord(
        numbers=np.asarray(data["numbers"]),
        positions=np.asarray(data["positions"]),
        energy=None if is_missing(energy) else float(np.asarray(energy).reshape(-1)[0]),
        forces=None if is_missing(forces) else np.asarray(forces),
        hessian=hessian,
        kind=(
            "other"
            if kind is None
            else kind_name(np.asarray(kind).reshape(-1)[0], source, index)
        ),
        reaction=-1 if reaction is None else int(np.asarray(reaction).reshape(-1)[0]),
        cell=np.asarray(data.get("cell", np.zeros((3, 3)))),
        pbc=np.asarray(data.get("pbc", np.zeros(3, dtype=bool))),
        product_labels=(
            ProductLabels(data[P.hessian_label_probes], data[P.hessian_label_hvp])
            if P.hessian_label_hvp in data and P.hessian_label_probes in data
            else None
        ),
    )


def check_loaded(
    n_atoms: int,
    positions: Optional[np.ndarray],
    energy: Optional[np.ndarray],
    hessian: Optional[np.ndarray],
    units: Mapping[str, Optional[str]],
    distance_unit: Optional[str],
    source: Optional[str] = None,
    index: Optional[int] = None,
):
    """:func:`~.record.check_values` on one structure as a dataset loads it.

    Args:
        n_atoms: atoms of the structure.
        positions: ``(N, 3)`` in ``distance_unit``, or None when not loaded.
        energy: ``(1,)`` in ``units["energy"]``, or None.
        hessian: ``(N², 3, 3)`` blocks in ``units["hessian"]``, or None (only a
            one-atom Hessian is checked here).
        units: the units of the loaded properties (after any ``property_units``).
        distance_unit: the unit of the loaded positions.
        source: file for messages.
        index: structure index for messages.

    Raises:
        HessianDataError: coincident atoms, a collapsed geometry, an absurd energy
            per atom or a nonzero one-atom Hessian (file, structure, value named).
    """
    check_values(
        positions,
        energy,
        hessian if n_atoms == 1 else None,
        {
            "distance": distance_unit,
            "energy": units.get("energy"),
            P.hessian: units.get(P.hessian),
        },
        source,
        index,
        n_atoms=n_atoms,
    )


def loaded_array(value: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """A stored property as a dataset returns it, scaled by a unit factor.

    Floating values become float64 whatever their storage precision (so ``.h5`` and
    ``.db`` give identical batches); integer and boolean labels become int64
    (SchNetPack's ``ASEAtomsData`` would turn them into float32 by multiplying with
    1.0) and are not scaled.
    """
    value = np.asarray(value)
    if np.issubdtype(value.dtype, np.integer) or value.dtype == bool:
        return np.array(value, dtype=np.int64)
    array = np.array(value, dtype=np.float64)
    if factor != 1.0:
        array = array * factor
    return array


def to_tensor(value: np.ndarray, factor: float = 1.0) -> "torch.Tensor":
    """Tensor of a stored property, scaled by a unit factor (:func:`loaded_array`)."""
    import torch

    return torch.from_numpy(loaded_array(value, factor))
