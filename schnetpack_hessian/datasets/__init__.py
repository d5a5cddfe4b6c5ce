"""Data sets shipped with the package.

- :func:`reactive_set_path`: the reactive H/C/N/O critical-point set
  (ωB97X/6-31G(d) energies, forces and analytic Hessians of reactants, products,
  transition states, IRC points and normal-mode samples); see ``README.md`` here.
"""

from pathlib import Path

__all__ = ["reactive_set_path", "DATASET_DIR"]

#: Directory holding the shipped data files and their data card.
DATASET_DIR: Path = Path(__file__).resolve().parent


def reactive_set_path() -> Path:
    """Path of the shipped reactive set (``reactive_chon.h5``).

    Read it with :func:`schnetpack_hessian.data.iread` or train on it with
    :class:`schnetpack_hessian.data.HessianDataModule`.

    Raises:
        FileNotFoundError: the file is missing from this installation.
    """
    for name in ("reactive_chon.h5", "reactive_chon.db"):
        path = DATASET_DIR / name
        if path.exists():
            return path
    raise FileNotFoundError(
        f"the reactive set reactive_chon.h5 is not in {DATASET_DIR}; regenerate it "
        "with data_scripts/generate_reactive_set.py (see docs/GENERATE.md)"
    )
