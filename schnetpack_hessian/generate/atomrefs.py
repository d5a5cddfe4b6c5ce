"""Single-atom reference energies at the level of theory of a generated data set.

SchNetPack subtracts per-element reference energies (``atomrefs`` in a data set's
metadata; ``RemoveOffsets(remove_atomrefs=True)``) so that a model learns binding
energies instead of total energies, which differ by thousands of kcal/mol between
compositions.  Isolated-atom energies in their ground-state spin multiplicity at the
data set's own method and basis are the usual choice (as in QM9).
"""

from typing import Dict, Iterable, List

import numpy as np

from schnetpack_hessian.generate.calculators import MethodSpec, make_engine

__all__ = ["GROUND_STATE_MULTIPLICITY", "atom_reference_energies", "atomrefs_table"]

#: Ground-state spin multiplicities 2S+1 of the free atoms (Hund's rules).
GROUND_STATE_MULTIPLICITY: Dict[int, int] = {1: 2, 6: 3, 7: 4, 8: 3}


def atom_reference_energies(
    spec: MethodSpec, numbers: Iterable[int]
) -> Dict[int, float]:
    """Energy (eV) of each free atom ``Z`` in ``numbers`` at level ``spec``.

    Raises:
        ValueError: an element without a tabulated ground-state multiplicity.
    """
    energies: Dict[int, float] = {}
    for z in sorted({int(n) for n in numbers}):
        if z not in GROUND_STATE_MULTIPLICITY:
            raise ValueError(
                f"no ground-state multiplicity for Z={z}; known: "
                f"{sorted(GROUND_STATE_MULTIPLICITY)}"
            )
        engine = make_engine(spec, charge=0, multiplicity=GROUND_STATE_MULTIPLICITY[z])
        result = engine.compute(np.array([z]), np.zeros((1, 3)), fresh=True)
        energies[z] = float(result.energy)
    return energies


def atomrefs_table(energies: Dict[int, float], zmax: int = 100) -> List[float]:
    """SchNetPack's atomref layout: a list indexed by atomic number (0 elsewhere)."""
    table = [0.0] * zmax
    for z, e in energies.items():
        table[z] = e
    return table
