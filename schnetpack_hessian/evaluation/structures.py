"""Per-structure errors of a model and their pooling per kind and per reaction.

A row holds one structure's numbers, its physical ones as
:class:`~schnetpack_hessian.quantities.Quantity` in ASE units (eV, eV/Å, eV/Å², cm⁻¹);
:data:`STRUCTURE_ROW` and :data:`POOLED` declare every key and its dimension. Pooled
statistics weight each structure by its number of force components, Hessian entries,
eigenvalues or modes, so that pooled MAE/RMSE equal those over all entries.
"""

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase.data import atomic_masses
from ase.symbols import Symbols

from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.evaluation.predict import Prediction
from schnetpack_hessian.quantities import Dimension, Schema
from schnetpack_hessian.evaluation.spectra import (
    IMAG_THRESHOLD,
    HessianComparison,
    compare_hessians,
    expected_imaginary,
)

__all__ = [
    "Row",
    "STRUCTURE_ROW",
    "POOLED",
    "structure_row",
    "compare_structure",
    "pool",
    "group_rows",
]

_E, _F, _H = Dimension.ENERGY, Dimension.FORCE, Dimension.HESSIAN
_CM, _ONE = Dimension.WAVENUMBER, Dimension.DIMENSIONLESS

#: One structure's numbers (keys and dimensions: :data:`STRUCTURE_ROW`).
Row = Dict[str, object]

#: The keys of a structure's row, in column order; None: labels, indices, counts.
STRUCTURE_ROW = Schema(
    "structure row",
    {
        "index": None,
        "kind": None,
        "reaction": None,
        "formula": None,
        "n_atoms": None,
        "energy_ref": _E,
        "energy_model": _E,
        "energy_error": _E,
        "forces_mae": _F,
        "forces_rmse": _F,
        "n_forces": None,
        "hessian_mae": _H,
        "hessian_rmse": _H,
        "n_hessian": None,
        "eigenvalue_mae": _H,
        "n_eigenvalues": None,
        "lowest_mode_cosine": _ONE,
        "lowest_mode_cosine_mw": _ONE,
        "frequency_mae": _CM,
        "frequency_mae_matched": _CM,
        "n_modes": None,
        "n_imaginary_ref": None,
        "n_imaginary_model": None,
        "n_imaginary_expected": None,
        "imaginary_count_correct": None,
        "zpe_ref": _E,
        "zpe_model": _E,
        "zpe_error": _E,
        "reaction_name": None,
    },
)

#: The keys of pooled statistics (:func:`pool`); None: counts.
POOLED = Schema(
    "pooled statistics",
    {
        "n_structures": None,
        "energy_mae": _E,
        "energy_rmse": _E,
        "forces_mae": _F,
        "forces_rmse": _F,
        "hessian_mae": _H,
        "hessian_rmse": _H,
        "n_hessians": None,
        "eigenvalue_mae": _H,
        "lowest_mode_cosine": _ONE,
        "lowest_mode_cosine_mw": _ONE,
        "frequency_mae": _CM,
        "frequency_mae_matched": _CM,
        "imaginary_count_accuracy": _ONE,
        "zpe_mae": _E,
    },
)


def structure_row(
    index: int,
    record: HessianRecord,
    prediction: Prediction,
    comparison: Optional[HessianComparison] = None,
) -> Row:
    """Errors of one structure.

    Args:
        index: position of the structure in the evaluated data.
        record: reference structure in ASE units (energy in eV, forces ``(N, 3)``
            in eV/Å, Hessian ``(3N, 3N)`` in eV/Å² or ``None``, kind, reaction).
        prediction: the model's prediction.
        comparison: spectral comparison, when both Hessians exist.

    Raises:
        ValueError: the reference has no energy or no forces.
    """
    if record.energy is None or record.forces is None:
        raise ValueError(
            f"{record.origin or f'structure {index}'}: no reference energy or forces "
            "to compare with"
        )
    ref_e = float(record.energy)
    df = prediction.forces - record.forces
    row: Row = STRUCTURE_ROW(
        index=index,
        kind=record.kind,
        reaction=int(record.reaction),
        formula=Symbols(record.numbers).get_chemical_formula(),
        n_atoms=record.n_atoms,
        energy_ref=ref_e,
        energy_model=prediction.energy,
        energy_error=prediction.energy - ref_e,
        forces_mae=float(np.abs(df).mean()),
        forces_rmse=float(np.sqrt((df**2).mean())),
        n_forces=int(df.size),
    )
    href = record.hessian
    if href is not None and prediction.hessian is not None:
        dh = prediction.hessian - href
        row.update(
            STRUCTURE_ROW(
                hessian_mae=float(np.abs(dh).mean()),
                hessian_rmse=float(np.sqrt((dh**2).mean())),
                n_hessian=int(dh.size),
            )
        )
    if comparison is not None:
        expected = expected_imaginary(str(row["kind"]))
        target = comparison.n_imaginary_ref if expected is None else expected
        row.update(
            STRUCTURE_ROW(
                eigenvalue_mae=comparison.eigenvalue_mae,
                n_eigenvalues=len(comparison.eigenvalues_ref),
                lowest_mode_cosine=comparison.lowest_mode_cosine,
                lowest_mode_cosine_mw=comparison.lowest_mode_cosine_mw,
                frequency_mae=comparison.frequency_mae,
                frequency_mae_matched=comparison.frequency_mae_matched,
                n_modes=len(comparison.frequencies_ref),
                n_imaginary_ref=comparison.n_imaginary_ref,
                n_imaginary_model=comparison.n_imaginary_model,
                n_imaginary_expected=-1 if expected is None else expected,
                imaginary_count_correct=int(comparison.n_imaginary_model == target),
                zpe_ref=comparison.zpe_ref,
                zpe_model=comparison.zpe_model,
                zpe_error=comparison.zpe_model - comparison.zpe_ref,
            )
        )
    return row


def compare_structure(
    record: HessianRecord,
    prediction: Prediction,
    imag_threshold: float = IMAG_THRESHOLD,
) -> Optional[HessianComparison]:
    """Spectral comparison of a structure (ASE units; standard atomic masses),
    None when a Hessian is missing."""
    if record.hessian is None or prediction.hessian is None:
        return None
    masses = atomic_masses[np.asarray(record.numbers)]
    return compare_hessians(
        record.hessian, prediction.hessian, record.positions, masses, imag_threshold
    )


def _weighted(rows: Sequence[Row], key: str, weight: str, squared: bool) -> float:
    values = [(r[key], r[weight]) for r in rows if key in r and not _nan(r[key])]
    if not values:
        return float("nan")
    v = np.array([x for x, _ in values], dtype=np.float64)
    w = np.array([n for _, n in values], dtype=np.float64)
    if squared:
        return float(np.sqrt((v**2 * w).sum() / w.sum()))
    return float((v * w).sum() / w.sum())


def _mean(rows: Sequence[Row], key: str, transform=lambda x: x) -> float:
    values = [transform(r[key]) for r in rows if key in r and not _nan(r[key])]
    return float(np.mean(values)) if values else float("nan")


def _nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def pool(rows: Sequence[Row]) -> Dict[str, object]:
    """Pooled statistics of a group of rows (keys and dimensions: :data:`POOLED`)."""
    out: Dict[str, object] = POOLED(
        n_structures=len(rows),
        energy_mae=_mean(rows, "energy_error", abs),
        energy_rmse=math.sqrt(_mean(rows, "energy_error", lambda x: x * x)),
        forces_mae=_weighted(rows, "forces_mae", "n_forces", False),
        forces_rmse=_weighted(rows, "forces_rmse", "n_forces", True),
    )
    if any("hessian_mae" in r for r in rows):
        out.update(
            POOLED(
                hessian_mae=_weighted(rows, "hessian_mae", "n_hessian", False),
                hessian_rmse=_weighted(rows, "hessian_rmse", "n_hessian", True),
                n_hessians=sum(1 for r in rows if "hessian_mae" in r),
            )
        )
    if any("eigenvalue_mae" in r for r in rows):
        out.update(
            POOLED(
                eigenvalue_mae=_weighted(
                    rows, "eigenvalue_mae", "n_eigenvalues", False
                ),
                lowest_mode_cosine=_mean(rows, "lowest_mode_cosine"),
                lowest_mode_cosine_mw=_mean(rows, "lowest_mode_cosine_mw"),
                frequency_mae=_weighted(rows, "frequency_mae", "n_modes", False),
                frequency_mae_matched=_weighted(
                    rows, "frequency_mae_matched", "n_modes", False
                ),
                imaginary_count_accuracy=_mean(rows, "imaginary_count_correct"),
                zpe_mae=_mean(rows, "zpe_error", abs),
            )
        )
    return out


def group_rows(rows: Sequence[Row], key: str) -> Dict[str, List[Row]]:
    """Rows grouped by the value of ``key`` (as strings, in order of appearance)."""
    groups: Dict[str, List[Row]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(row)
    return groups
