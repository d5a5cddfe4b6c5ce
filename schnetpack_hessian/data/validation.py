"""Checks every structure passes before it is written or trained on.

All problems raise :class:`HessianDataError` with a message that names the file, the
structure index and what is wrong, so a user can find the bad record in a large file.
"""

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from schnetpack_hessian.errors import HessianDataError

__all__ = [
    "HessianDataError",
    "SYMMETRY_RTOL",
    "hessian_asymmetry",
    "symmetrize",
    "check_hessian",
    "check_numbers",
    "check_array",
    "check_target",
    "is_missing",
    "where",
    "prefix",
    "SymmetryReport",
    "MIN_DISTANCE",
    "MAX_ENERGY_PER_ATOM",
    "ONE_ATOM_HESSIAN_ATOL",
    "check_geometry",
    "check_energy",
    "check_one_atom_hessian",
]

#: Default tolerance of the symmetry check: ``max|H - Hᵀ| / max|H|``.  Real reference
#: Hessians are not exactly symmetric (HORM's float32 Hessians: ~3e-3 eV/Å² on entries up
#: to ~100, i.e. ~3e-5 relative); a wrongly reshaped or transposed block layout gives
#: values of order 0.1–1.
SYMMETRY_RTOL: float = 1e-2

#: Smallest distance between two atoms [Å]: well below any real bond (H–H 0.74 Å)
#: and any sensible non-equilibrium geometry; closer atoms make SchNet/PaiNN features
#: and their derivatives blow up (a NaN loss, a poisoned model).
MIN_DISTANCE: float = 0.1
#: Largest plausible magnitude of a total energy per atom [eV/atom]: all-electron DFT
#: total energies of heavy elements reach ~1e4–1e5 eV/atom only beyond the 5th row
#: (C/N/O: ~1000–2100 eV/atom; xTB or offset-subtracted energies are small); larger
#: values are unit mix-ups, byte-swapped or garbage numbers.
MAX_ENERGY_PER_ATOM: float = 1.0e5
#: Largest entry of a one-atom Hessian [eV/Å²]: one free atom has no curvature (the
#: energy is invariant under translations, so its 3×3 Hessian is zero); real force
#: constants are ≥ 3 eV/Å² (:data:`~.physics.FORCE_CONSTANT_RANGE`).
ONE_ATOM_HESSIAN_ATOL: float = 1.0e-2

_MAX_Z = 118


def where(source: Any, index: Optional[int]) -> str:
    """``"file.h5, structure 12"``: the location prefix of every error message.

    ``source`` may also be an :class:`~.record.Origin` (then ``index`` is ignored),
    which prints as ``"input.xyz: structure 3 (frame name)"``.
    """
    if source is not None and not isinstance(source, (str, os.PathLike)):
        return str(source)
    parts = [str(source) if source else "<data>"]
    if index is not None:
        parts.append(f"structure {index}")
    return ", ".join(parts)


def prefix(source: Any, index: Optional[int]) -> str:
    """``"<where>: "`` to put before a problem, or ``""`` when no location is known
    (readers leave the location to the conversion driver, which adds it)."""
    if source is None and index is None:
        return ""
    return f"{where(source, index)}: "


def is_missing(value: Optional[np.ndarray]) -> bool:
    """True if a structure lacks this target: ``None`` or all NaN, the storage
    convention for a missing energy, forces or Hessian."""
    if value is None:
        return True
    value = np.asarray(value)
    return value.dtype.kind in "fc" and bool(np.all(np.isnan(value)))


def hessian_asymmetry(hessian: np.ndarray) -> float:
    """Relative asymmetry ``max|H - Hᵀ| / max|H|`` of a square Hessian ``(3N, 3N)``.

    Returns 0 for an all-zero matrix.
    """
    scale = float(np.max(np.abs(hessian))) if hessian.size else 0.0
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(hessian - hessian.T))) / scale


def symmetrize(hessian: np.ndarray) -> np.ndarray:
    """``(H + Hᵀ) / 2`` of a square Hessian ``(3N, 3N)``, same dtype."""
    return (0.5 * (hessian + hessian.T)).astype(hessian.dtype, copy=False)


def check_numbers(numbers: np.ndarray, source: Optional[str], index: Optional[int]):
    """Atomic numbers must be known elements (1–118).

    Raises:
        HessianDataError: an atomic number is out of range.
    """
    numbers = np.asarray(numbers)
    bad = (numbers < 1) | (numbers > _MAX_Z)
    if numbers.ndim != 1 or numbers.size == 0 or bad.any():
        raise HessianDataError(
            f"{prefix(source, index)}unknown elements / atomic numbers "
            f"{sorted(set(numbers[bad].tolist())) if numbers.ndim == 1 else numbers}"
        )


def check_hessian(
    hessian: Optional[np.ndarray],
    n_atoms: int,
    source: Optional[str] = None,
    index: Optional[int] = None,
    rtol: float = SYMMETRY_RTOL,
    fix_symmetry: bool = False,
) -> Tuple[Optional[np.ndarray], float]:
    """Check a square Hessian ``(3N, 3N)`` and optionally symmetrise it.

    Args:
        hessian: square Hessian or ``None``/all-NaN for "no Hessian".
        n_atoms: number of atoms N of the structure.
        source: file name for messages.
        index: structure index for messages.
        rtol: tolerance of :func:`hessian_asymmetry`.
        fix_symmetry: return ``(H + Hᵀ)/2`` (only for asymmetry within ``rtol``).

    Returns:
        ``(hessian, asymmetry)``: the (possibly symmetrised) Hessian, ``None`` if missing,
        and its relative asymmetry before symmetrisation (0 if missing).

    Raises:
        HessianDataError: wrong shape, partially NaN, infinite, or asymmetric beyond rtol.
    """
    loc = prefix(source, index)
    if hessian is None:
        return None, 0.0
    hessian = np.asarray(hessian)
    if hessian.shape != (3 * n_atoms, 3 * n_atoms):
        raise HessianDataError(
            f"{loc}Hessian has shape {hessian.shape}, expected "
            f"{(3 * n_atoms, 3 * n_atoms)} for {n_atoms} atoms"
        )
    nan = np.isnan(hessian)
    if nan.all():
        return None, 0.0
    if nan.any():
        raise HessianDataError(
            f"{loc}Hessian is partially NaN ({int(nan.sum())} of {nan.size} entries); "
            "a missing Hessian must be all NaN"
        )
    if not np.isfinite(hessian).all():
        raise HessianDataError(f"{loc}Hessian contains infinite values")
    asym = hessian_asymmetry(hessian)
    if asym > rtol:
        raise HessianDataError(
            f"{loc}Hessian is not symmetric: max|H - H^T| / max|H| = {asym:.3g} > "
            f"{rtol:g}; a wrong reshape or transposed (N*N, 3, 3) block layout looks "
            "like this (for small real asymmetry raise the tolerance or symmetrize)"
        )
    if fix_symmetry and asym > 0.0:
        hessian = symmetrize(hessian)
    return hessian, asym


def check_target(
    name: str,
    value: Optional[np.ndarray],
    shape: Tuple[int, ...],
    source: Optional[str],
    index: Optional[int],
) -> Optional[np.ndarray]:
    """Check a target that a structure may lack (``energy`` ``(1,)``, ``forces``
    ``(N, 3)``): ``None`` or all NaN means missing; otherwise it must have ``shape``
    and be finite.

    Returns:
        The array, or ``None`` when the target is missing.

    Raises:
        HessianDataError: wrong shape, partially NaN or infinite values.
    """
    if value is None:
        return None
    value = np.asarray(value)
    if value.shape != shape:
        raise HessianDataError(
            f"{prefix(source, index)}{name} has shape {value.shape}, expected {shape}"
        )
    nan = np.isnan(value)
    if nan.all():
        return None
    if nan.any():
        raise HessianDataError(
            f"{prefix(source, index)}{name} is partially NaN ({int(nan.sum())} of "
            f"{value.size} entries); a missing {name} is all NaN"
        )
    return check_array(name, value, shape, source, index)


def check_array(
    name: str,
    value: Optional[np.ndarray],
    shape: Tuple[int, ...],
    source: Optional[str],
    index: Optional[int],
) -> np.ndarray:
    """Check that a property exists, has ``shape`` and is finite.

    Raises:
        HessianDataError: missing, wrong shape or non-finite.
    """
    loc = prefix(source, index)
    if value is None:
        raise HessianDataError(f"{loc}{name} is missing")
    value = np.asarray(value)
    if value.shape != shape:
        raise HessianDataError(f"{loc}{name} has shape {value.shape}, expected {shape}")
    bad = ~np.isfinite(value)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise HessianDataError(
            f"{loc}{name} contains NaN or infinite values ({int(bad.sum())} of "
            f"{value.size}; first {value[first]} at index {first})"
        )
    return value


def check_geometry(
    positions: np.ndarray,
    source: Any = None,
    index: Optional[int] = None,
    min_distance: float = MIN_DISTANCE,
):
    """No two atoms closer than ``min_distance`` and no collapsed geometry.

    Direct (not minimum-image) distances: two atoms at one position are found in
    periodic structures too.

    Args:
        positions: Cartesian positions ``(N, 3)`` [Å].
        source: file (or :class:`~.record.Origin`) for messages.
        index: structure index for messages.
        min_distance: smallest allowed distance [Å] (default :data:`MIN_DISTANCE`).

    Raises:
        HessianDataError: all atoms within ``min_distance`` of each other (a geometry
            collapsed to a point), or the closest pair (named, with its distance).
    """
    x = np.asarray(positions, dtype=np.float64)
    n = len(x)
    if n < 2:
        return
    diff = x[:, None, :] - x[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    d2.flat[:: n + 1] = np.inf
    k = int(np.argmin(d2))
    if d2.flat[k] >= min_distance**2:
        return
    i, j = divmod(k, n)
    closest = float(np.sqrt(d2.flat[k]))
    d2.flat[:: n + 1] = 0.0
    extent = float(np.sqrt(d2.max()))
    if extent < min_distance:
        raise HessianDataError(
            f"{prefix(source, index)}degenerate geometry: all {n} atoms lie within "
            f"{extent:.3g} Ang of each other (the structure collapsed to a point; "
            "zeroed coordinates or a wrong distance unit?)"
        )
    i, j = sorted((int(i), int(j)))
    raise HessianDataError(
        f"{prefix(source, index)}atoms {i} and {j} are {closest:.3g} Ang apart, "
        f"closer than {min_distance:g} Ang (coincident or near-coincident atoms; "
        "a duplicated atom or a wrong distance unit?)"
    )


def check_energy(
    energy: float,
    n_atoms: int,
    source: Any = None,
    index: Optional[int] = None,
    bound: float = MAX_ENERGY_PER_ATOM,
):
    """A finite energy with ``|E| / N`` at most ``bound``.

    Args:
        energy: total energy [eV].
        n_atoms: number of atoms N.
        source: file (or :class:`~.record.Origin`) for messages.
        index: structure index for messages.
        bound: largest plausible ``|E| / N`` [eV/atom] (default
            :data:`MAX_ENERGY_PER_ATOM`).

    Raises:
        HessianDataError: a non-finite energy or one beyond the bound (value named).
    """
    energy = float(energy)
    if not np.isfinite(energy):
        raise HessianDataError(f"{prefix(source, index)}energy is {energy}")
    per_atom = abs(energy) / max(int(n_atoms), 1)
    if per_atom > bound:
        raise HessianDataError(
            f"{prefix(source, index)}energy {energy:.6g} eV is {per_atom:.3g} eV per "
            f"atom in magnitude, beyond {bound:.3g} eV/atom (no real total energy comes "
            "close; a wrong energy unit or corrupt numbers?)"
        )


def check_one_atom_hessian(
    hessian: Optional[np.ndarray],
    source: Any = None,
    index: Optional[int] = None,
    atol: float = ONE_ATOM_HESSIAN_ATOL,
):
    """The Hessian of one atom (``(3, 3)`` or ``(1, 3, 3)``) is zero within ``atol``.

    Args:
        hessian: the Hessian [eV/Å²]; ``None`` or all NaN: none, nothing to check.
        source: file (or :class:`~.record.Origin`) for messages.
        index: structure index for messages.
        atol: largest allowed entry [eV/Å²] (default :data:`ONE_ATOM_HESSIAN_ATOL`).

    Raises:
        HessianDataError: an entry beyond ``atol`` (value named).
    """
    if is_missing(hessian):
        return
    largest = float(np.max(np.abs(hessian)))
    if largest > atol:
        raise HessianDataError(
            f"{prefix(source, index)}one-atom structure with a nonzero Hessian "
            f"(max|H| = {largest:.3g} eV/Ang/Ang > {atol:g}); the energy of one free "
            "atom is invariant under translations, so its Hessian is zero"
        )


@dataclass
class SymmetryReport:
    """Running summary of Hessian asymmetry over a file (for ``--check`` and logs)."""

    n_structures: int = 0
    n_hessians: int = 0
    worst_asymmetry: float = 0.0
    worst_index: Optional[int] = None
    #: where the worst asymmetry is (input file and index within it), if known
    worst_at: Optional[str] = None
    #: sum-rule summary (:class:`~.physics.PhysicsReport`) where physics was checked
    physics: Optional[Any] = None
    #: structures that repeat an earlier one (same numbers and positions)
    duplicates: int = 0

    def update(
        self,
        index: int,
        has_hessian: bool,
        asymmetry: float,
        where: Optional[str] = None,
    ):
        """Account for structure ``index`` (running count; ``where`` names it)."""
        self.n_structures += 1
        if has_hessian:
            self.n_hessians += 1
            if self.worst_index is None or asymmetry > self.worst_asymmetry:
                self.worst_asymmetry = asymmetry
                self.worst_index = index
                self.worst_at = where

    def as_dict(self) -> Dict[str, Any]:
        """The summary as JSON-ready values (``physics`` as its own ``as_dict``)."""
        return {
            "structures": self.n_structures,
            "hessians": self.n_hessians,
            "worst_asymmetry": self.worst_asymmetry,
            "worst_index": self.worst_index,
            "worst_asymmetry_at": self.worst_at,
            "duplicates": self.duplicates,
            "physics": None if self.physics is None else self.physics.as_dict(),
        }
