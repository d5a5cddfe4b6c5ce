r"""Physics checks of reference Hessians against their own forces.

Symmetry cannot see every wrong layout or unit: a Hessian with every 3×3 block
transposed is still symmetric, and a Hessian in Hartree/Bohr² declared as eV/Å² is
only 97× too small.  An energy invariant under rigid motions obeys, at every geometry,
the translational sum rule :math:`\sum_j H_{ij} = 0` and the rotational sum rule
:math:`H(\omega \times r) = \omega \times g` with the gradient :math:`g = -F`
(:func:`~schnetpack_hessian.rigid.sum_rule_residuals`).  The rotational rule ties the
Hessian to the stored forces, so at non-stationary geometries it exposes transposed
blocks, a Hessian in other units than the forces and a flipped force sign.  A
magnitude check on the largest diagonal force constant catches a wrong unit even at
stationary points.

Measured on real data (``docs/DATA.md``): the shipped ωB97X/6-31G(d) set (pyscf,
finite grid) has residuals up to 7.4e-3 (translation) and 5.3e-3 (rotation); the default
tolerance :data:`PHYSICS_RTOL` = 2e-2 leaves room for that.
"""

import logging
import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.data.units import conversion_factor
from schnetpack_hessian.data.validation import HessianDataError, prefix
from schnetpack_hessian.layout import blocks_to_square, square_to_blocks
from schnetpack_hessian.rigid import sum_rule_residuals

__all__ = [
    "PHYSICS_RTOL",
    "FORCE_CONSTANT_RANGE",
    "PhysicsCheck",
    "PhysicsReport",
    "residuals",
]

log = logging.getLogger(__name__)

#: Default tolerance of the sum rules (relative residual, see
#: :func:`~schnetpack_hessian.rigid.sum_rule_residuals`).
PHYSICS_RTOL: float = 2e-2
#: Plausible range of a molecule's largest diagonal Hessian element [eV/Å²]: real
#: bonds give 10–300 (C–H stretch ≈ 30, C≡N ≈ 110); outside it the unit is wrong.
FORCE_CONSTANT_RANGE: Tuple[float, float] = (3.0, 1.0e4)
#: Hessian units offered when the magnitude is implausible.
_UNIT_GUESSES = (
    "Hartree/Bohr/Bohr",
    "Hartree/Ang/Ang",
    "eV/Ang/Ang",
    "eV/Bohr/Bohr",
    "kcal/mol/Ang/Ang",
    "kJ/mol/Ang/Ang",
)
_TYPICAL = (10.0, 300.0)
_MODES = ("error", "warn", "off")


@dataclass
class PhysicsReport:
    """Worst sum-rule residuals seen (for ``--check`` and conversion reports)."""

    n_checked: int = 0
    n_failed: int = 0
    worst_translation: float = 0.0
    worst_translation_at: Optional[str] = None
    worst_rotation: float = 0.0
    worst_rotation_at: Optional[str] = None

    def update(self, where: str, translation: float, rotation: float, failed: bool):
        """Account for one checked structure."""
        self.n_checked += 1
        self.n_failed += int(failed)
        if translation >= self.worst_translation:
            self.worst_translation, self.worst_translation_at = translation, where
        if rotation >= self.worst_rotation:
            self.worst_rotation, self.worst_rotation_at = rotation, where

    def as_dict(self) -> Dict[str, object]:
        """JSON-friendly summary."""
        return dict(self.__dict__)


def residuals(
    record: HessianRecord, units: Dict[str, str]
) -> Tuple[float, float, float]:
    """``(translation, rotation, largest diagonal [eV/Å²])`` of a validated record.

    Forces, Hessian and positions are first brought to eV, Å so that the declared
    units are what is tested.  Periodic structures, and structures without forces
    (the rule needs the gradient), have no rotational rule (0).
    """
    h, x, g = _in_ev(record, units)
    rotations = not np.asarray(record.pbc).any() and record.forces is not None
    rho = _rho(h, x, g, rotations)
    rot = float(rho[3:].max()) if rotations else 0.0
    return float(rho[:3].max()), rot, float(np.max(np.diag(h)))


def _in_ev(record: HessianRecord, units: Dict[str, str]):
    """``(hessian [eV/Å²], positions [Å], gradient [eV/Å])`` in the declared units."""
    h = np.asarray(record.hessian) * conversion_factor(units[P.hessian], "eV/Ang/Ang")
    x = np.asarray(record.positions) * conversion_factor(units["distance"], "Ang")
    if record.forces is None:  # no gradient: only the translational rule applies
        return h, x, np.zeros_like(x)
    g = -np.asarray(record.forces) * conversion_factor(units["forces"], "eV/Ang")
    return h, x, g


def _rho(h: np.ndarray, x: np.ndarray, g: np.ndarray, rotations: bool) -> np.ndarray:
    """Sum-rule residuals in float64 (sources mix float32 and float64 arrays)."""
    h, x, g = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (h, x, g))
    return sum_rule_residuals(h, x, g, rotations).numpy()


@dataclass(frozen=True)
class PhysicsCheck:
    """Sum rules and magnitude plausibility of every Hessian, with their policy.

    Args:
        mode: ``"error"`` (default), ``"warn"`` (log and go on) or ``"off"``.
        rtol: tolerance of the sum rules (relative residual, ``0 < rtol < 1``).

    Raises:
        HessianDataError: unknown mode or a tolerance outside ``(0, 1)``.
    """

    mode: str = "error"
    rtol: float = PHYSICS_RTOL

    def __post_init__(self):
        if self.mode not in _MODES:
            raise HessianDataError(
                f"physics check mode must be one of {_MODES}, not {self.mode!r}"
            )
        if not (isinstance(self.rtol, (int, float)) and 0.0 < self.rtol < 1.0):
            raise HessianDataError(
                f"physics tolerance must be a number in (0, 1), not {self.rtol!r} "
                f"(default {PHYSICS_RTOL:g}; relative residual of the sum rules)"
            )

    def __call__(
        self,
        record: HessianRecord,
        units: Dict[str, str],
        report: Optional[PhysicsReport] = None,
    ):
        """Check one validated record (no-op without Hessian or with one atom).

        Raises:
            HessianDataError: a rule fails and ``mode="error"``; the message names the
                structure, the residual, the tolerance and the likely cause.
        """
        if self.mode == "off" or record.hessian is None or record.n_atoms < 2:
            return
        trans, rot, diag = residuals(record, units)
        problems = self._problems(record, units, trans, rot, diag)
        if report is not None:
            report.update(str(record.origin or ""), trans, rot, bool(problems))
        if not problems:
            return
        message = f"{prefix(record.origin, None)}" + "; ".join(problems)
        if self.mode == "error":
            raise HessianDataError(
                message + " (relax with --physics warn or --physics-rtol, "
                "PhysicsCheck(mode='warn'))"
            )
        log.warning(message)

    def _problems(self, record, units, trans, rot, diag) -> list:
        problems = []
        lo, hi = FORCE_CONSTANT_RANGE
        if not lo <= diag <= hi:
            problems.append(
                f"largest diagonal force constant {diag:.3g} eV/Ang/Ang (stored in "
                f"{units[P.hessian]}) is outside the range of real bonds "
                f"({lo:g} to {hi:g} eV/Ang/Ang){_guess_unit(diag, units[P.hessian])}"
            )
        if trans > self.rtol:
            problems.append(
                f"translational sum rule sum_j H_ij = 0 violated: residual {trans:.3g} "
                f"> {self.rtol:g}; a wrong reshape or misordered atoms look like this"
            )
        if rot > self.rtol:
            problems.append(
                f"rotational sum rule H (w x r) = w x g violated with the stored "
                f"forces: residual {rot:.3g} > {self.rtol:g}; "
                + _diagnose(record, units, self.rtol)
            )
        return problems


def _guess_unit(diag: float, declared: str) -> str:
    """``"; did you mean X?"`` for the units that make ``diag`` typical."""
    stored = diag / conversion_factor(declared, "eV/Ang/Ang")
    fits = [
        u
        for u in _UNIT_GUESSES
        if _TYPICAL[0] <= stored * conversion_factor(u, "eV/Ang/Ang") <= _TYPICAL[1]
        and conversion_factor(u, declared) != 1.0
    ]
    return f"; did you mean {' or '.join(fits)}?" if fits else ""


def _diagnose(record: HessianRecord, units: Dict[str, str], rtol: float) -> str:
    """Which common mistake explains a failed rotational rule."""
    h, x, g = _in_ev(record, units)
    if _rho(h, x, -g, True)[3:].max() <= rtol:
        return "the forces have the wrong sign (gradients dE/dR stored as forces?)"
    transposed = blocks_to_square(np.transpose(square_to_blocks(h), (0, 2, 1)))
    if _rho(transposed, x, g, True)[3:].max() <= rtol:
        return "every 3x3 block is transposed (wrong block layout)"
    scale = _best_scale(h, x, g)
    if (
        scale is not None
        and abs(math.log10(scale)) > 0.3
        and _rho(scale * h, x, g, True)[3:].max() <= rtol
    ):
        return (
            f"the Hessian is {1 / scale:.3g}x off from the forces' units (Hessian "
            f"declared as {units[P.hessian]}, forces as {units['forces']})"
        )
    return (
        "transposed 3x3 blocks, a Hessian in other units than the forces, or forces "
        "with the wrong sign look like this"
    )


def _best_scale(h: np.ndarray, x: np.ndarray, g: np.ndarray) -> Optional[float]:
    """Least-squares ``s`` with ``s H (e_k x c) ≈ e_k x g``; None if undefined."""
    c = x - x.mean(axis=0)
    hd, b = [], []
    for k in range(3):
        e = np.eye(3)[k]
        hd.append(h @ np.cross(e, c).ravel())
        b.append(np.cross(e, g).ravel())
    hd, b = np.concatenate(hd), np.concatenate(b)
    denom = float(hd @ hd)
    if denom == 0.0 or float(b @ b) == 0.0:
        return None
    scale = float(hd @ b) / denom
    return scale if scale > 0 else None
