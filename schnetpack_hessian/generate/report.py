"""Summaries of a generated data set for its data card.

:func:`summarize` reads a training file (through :mod:`schnetpack_hessian.data`) and
returns Markdown tables: structures per kind, and per reaction the formula, the
counts, the forward barrier and the TS imaginary frequency.  The tables in
``schnetpack_hessian/datasets/README.md`` are its output, so the card states what
the file contains.
"""

from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Union

from ase import units

from schnetpack_hessian import properties, vibrations
from schnetpack_hessian.markdown import table

__all__ = ["summarize"]

KCAL_PER_MOL = units.kcal / units.mol  # eV


def summarize(path: Union[str, Path]) -> str:
    """Markdown tables describing a generated data set.

    Args:
        path: ``.h5`` or ``.db`` file written by the generator.

    Returns:
        Markdown text: counts per kind, then one row per reaction with formula,
        counts per kind, forward/reverse barrier (kcal/mol) and the TS imaginary
        frequency (cm⁻¹).
    """
    from schnetpack_hessian import data

    meta = data.file_metadata(path)
    names = {int(k): v.get("name", "") for k, v in meta.get("reactions", {}).items()}
    counts: Dict[int, Dict[str, int]] = defaultdict(lambda: defaultdict(int))
    energy: Dict[int, Dict[str, float]] = defaultdict(dict)
    imag: Dict[int, float] = {}
    formula: Dict[int, str] = {}
    for record in data.iread_records(path):
        rid, kind = int(record.reaction), record.kind
        atoms = record.as_atoms()
        counts[rid][kind] += 1
        formula[rid] = atoms.get_chemical_formula()
        if kind in properties.CRITICAL_KINDS:
            energy[rid][kind] = record.energy
        if kind == "ts":
            imag[rid] = float(vibrations.frequencies(record.hessian, atoms=atoms)[0])
    kinds = list(properties.KINDS[:5])
    total = {k: sum(c[k] for c in counts.values()) for k in kinds}
    rows: List[List[object]] = []
    for rid in sorted(counts):
        e = energy[rid]
        if all(k in e for k in properties.CRITICAL_KINDS):
            fwd = (e["ts"] - e["reactant"]) / KCAL_PER_MOL
            rev = (e["ts"] - e["product"]) / KCAL_PER_MOL
            barrier = f"{fwd:.1f} / {rev:.1f}"
        else:
            barrier = "–"
        nu = f"{imag[rid]:.0f}i".replace("-", "") if rid in imag else "–"
        rows.append(
            [rid, names.get(rid, ""), formula[rid]]
            + [counts[rid][k] for k in kinds]
            + [barrier, nu]
        )
    totals = table([*kinds, "all"], [[*(total[k] for k in kinds), sum(total.values())]])
    header = ["id", "reaction", "formula", *kinds]
    header += ["barrier fwd / rev (kcal/mol)", "TS ν (cm⁻¹)"]
    return totals + "\n\n" + table(header, rows) + "\n"
