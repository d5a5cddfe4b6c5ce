"""Teacher labels: Hessians computed by a trained model, written into a training file.

``spkhess-generate label IN --teacher MODEL --out OUT`` copies a training file and
gives its structures the teacher's exact Hessians (float64, in the file's Hessian
unit), by default only those without a reference Hessian: energy/force data becomes
E+F+H data at the cost of a model evaluation instead of a quantum-chemical Hessian.
Energies, forces, labels and metadata are copied unchanged; the metadata records
which model labelled how many structures (``hessian_labels``).
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterator, Union

import numpy as np
from ase import Atoms
from tqdm import tqdm

from schnetpack_hessian.data.io import (
    file_metadata,
    file_units,
    read_records,
    write_records,
)
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.data.units import conversion_factor

__all__ = ["LabelReport", "label_file"]

PathLike = Union[str, Path]


@dataclass
class LabelReport:
    """What :func:`label_file` did.

    Attributes:
        n_structures: structures written.
        n_labelled: structures given the teacher's Hessian.
        n_kept: structures whose reference Hessian was kept.
    """

    n_structures: int = 0
    n_labelled: int = 0
    n_kept: int = 0


def label_file(
    source: PathLike,
    out: PathLike,
    teacher,
    all_structures: bool = False,
    overwrite: bool = False,
    precision: str = "float64",
    progress: bool = True,
) -> LabelReport:
    """Write ``source`` to ``out`` with the teacher's Hessians.

    Args:
        source: a training file (``.h5`` / ``.db``).
        out: the labelled file (atomic write).
        teacher: the teacher, an :class:`~schnetpack_hessian.evaluation.model.EvaluationModel`
            (:func:`~schnetpack_hessian.evaluation.model.load_model`).
        all_structures: replace reference Hessians too (default: label only the
            structures without one).
        overwrite: replace an existing ``out``.
        precision: storage dtype of forces and Hessians in ``.h5`` output.
        progress: show a progress bar.

    Raises:
        HessianDataError: a bad structure in ``source`` (file and index named).
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    units = file_units(source)
    metadata = {k: v for k, v in file_metadata(source).items() if not k.startswith("_")}
    to_angstrom = conversion_factor(units["distance"], "Ang")
    to_file = conversion_factor("eV/Ang/Ang", units["hessian"])
    calc = teacher.calculator()
    report = LabelReport()

    def labelled() -> Iterator[HessianRecord]:
        for record in tqdm(
            read_records(source), disable=not progress, unit="structure"
        ):
            report.n_structures += 1
            if record.hessian is not None and not all_structures:
                report.n_kept += 1
                yield record
                continue
            atoms = Atoms(
                numbers=record.numbers,
                positions=np.asarray(record.positions) * to_angstrom,
                cell=np.asarray(record.cell) * to_angstrom,
                pbc=record.pbc,
            )
            hessian = np.asarray(calc.get_hessian(atoms), dtype=np.float64) * to_file
            report.n_labelled += 1
            yield replace(record, hessian=hessian)

    metadata["hessian_labels"] = _provenance(teacher, all_structures)
    write_records(
        out,
        labelled(),
        units,
        metadata=metadata,
        overwrite=overwrite,
        precision=precision,
    )
    return report


def _provenance(teacher, all_structures: bool) -> Dict[str, object]:
    """The metadata entry naming the teacher."""
    return {
        "teacher": str(teacher.path),
        "name": teacher.name,
        "structures": "all" if all_structures else "without a reference Hessian",
    }
