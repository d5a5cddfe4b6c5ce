"""Data sets shipped with the package.

- :func:`reactive_set_path`: the reactive H/C/N/O critical-point set
  (ωB97X/6-31G(d) energies, forces and analytic Hessians of reactants, products,
  transition states, IRC points and normal-mode samples); see ``README.md`` here.
  ``reactive_set_path("xtb")``: the bulk set of enumerated reactions at GFN2-xTB.
"""

from pathlib import Path
from typing import Dict

__all__ = ["reactive_set_path", "REACTIVE_SETS", "DATASET_DIR"]

#: Directory holding the shipped data files and their data card.
DATASET_DIR: Path = Path(__file__).resolve().parent


#: level of theory → file stem of the shipped set
REACTIVE_SETS: Dict[str, str] = {
    "wb97x": "reactive_chon",
    "xtb": "reactive_chon_xtb",
}


def reactive_set_path(level: str = "wb97x") -> Path:
    """Path of a shipped reactive set.

    Args:
        level: ``"wb97x"`` (default): ``reactive_chon.h5``, ωB97X/6-31G(d), analytic
            Hessians; ``"xtb"``: ``reactive_chon_xtb.h5``, GFN2-xTB, Hessians from
            central differences of analytic gradients.

    Read it with :func:`schnetpack_hessian.data.iread` or train on it with
    :class:`schnetpack_hessian.data.HessianDataModule`.

    Raises:
        ValueError: unknown ``level``.
        FileNotFoundError: the file is not in this installation.
    """
    if level not in REACTIVE_SETS:
        raise ValueError(
            f"no shipped reactive set at level {level!r}; choose one of "
            f"{sorted(REACTIVE_SETS)}"
        )
    stem = REACTIVE_SETS[level]
    for suffix in (".h5", ".db"):
        path = DATASET_DIR / f"{stem}{suffix}"
        if path.exists():
            return path
    raise FileNotFoundError(
        f"the reactive set {stem}.h5 ({level}) is not in {DATASET_DIR}; generate it "
        "with spkhess-generate enumerate + run (see docs/GENERATE.md) and pass its "
        "path instead"
    )
