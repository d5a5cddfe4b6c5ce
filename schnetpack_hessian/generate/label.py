"""Teacher labels: curvature computed by a trained model, written into a training file.

``spkhess-generate label IN --teacher MODEL --out OUT`` copies a training file and
gives its structures the teacher's exact Hessians (float64, in the file's Hessian
unit), by default only those without a reference Hessian: energy/force data becomes
E+F+H data at the cost of a model evaluation instead of a quantum-chemical Hessian.
With ``--probes K`` it stores ``K`` of the teacher's Hessian-vector products per
structure with their probes instead (product labels, ``K`` backward passes of the
teacher instead of ``3N``: for molecules too large for full Hessians), which a model
in HVP mode trains on along the same probes (``globals.hessian_target=hvp``).
Energies, forces, reference Hessians, labels and metadata are copied unchanged; the
metadata names the teacher (``hessian_labels``, ``product_labels``).
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import schnetpack as spk
import schnetpack.transform as trn
import torch
from ase import Atoms
from tqdm import tqdm

from schnetpack_hessian.data.io import (
    file_metadata,
    file_units,
    read_records,
    write_records,
)
from schnetpack_hessian.data.record import HessianRecord, ProductLabels
from schnetpack_hessian.data.units import conversion_factor
from schnetpack_hessian.hessian import sample_probes
from schnetpack_hessian.teacher import Teacher

__all__ = ["LabelReport", "label_file"]

PathLike = Union[str, Path]


@dataclass
class LabelReport:
    """What :func:`label_file` did.

    Attributes:
        n_structures: structures written.
        n_labelled: structures given the teacher's Hessian or product labels.
        n_kept: structures whose reference Hessian was kept in place of a label.
    """

    n_structures: int = 0
    n_labelled: int = 0
    n_kept: int = 0


def _atoms_in_angstrom(record: HessianRecord, to_angstrom: float) -> Atoms:
    """The record's geometry as ``ase.Atoms`` in Å (for the teacher)."""
    return replace(
        record,
        positions=np.asarray(record.positions) * to_angstrom,
        cell=np.asarray(record.cell) * to_angstrom,
    ).as_atoms()


def label_file(
    source: PathLike,
    out: PathLike,
    teacher,
    all_structures: bool = False,
    overwrite: bool = False,
    precision: str = "float64",
    progress: bool = True,
    n_probes: Optional[int] = None,
    probe: str = "gaussian",
    seed: int = 0,
) -> LabelReport:
    """Write ``source`` to ``out`` with the teacher's Hessians, or with ``n_probes``
    of its Hessian-vector products per structure (product labels,
    :class:`~schnetpack_hessian.data.record.ProductLabels`).

    Args:
        source: a training file (``.h5`` / ``.db``).
        out: the labelled file (atomic write).
        teacher: the teacher, an
            :class:`~schnetpack_hessian.evaluation.model.EvaluationModel`
            (:func:`~schnetpack_hessian.evaluation.model.load_model`).
        all_structures: full Hessians: replace reference Hessians too (default: label
            only the structures without one).
        overwrite: replace an existing ``out``.
        precision: storage dtype of forces and Hessians in ``.h5`` output.
        progress: show a progress bar.
        n_probes: product labels per structure, for every structure (None: full
            Hessians).
        probe: their probes, ``"gaussian"``, ``"rademacher"`` or ``"rows"`` (train
            with ``Hessian(probe=...)`` of the same scheme).
        seed: seed of the probes (structure ``i`` draws from ``[seed, i]``).

    Raises:
        HessianDataError: a bad structure in ``source`` (file and index named).
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    units = file_units(source)
    metadata = {k: v for k, v in file_metadata(source).items() if not k.startswith("_")}
    to_angstrom = conversion_factor(units["distance"], "Ang")
    to_file = conversion_factor("eV/Ang/Ang", units["hessian"])
    report = LabelReport()
    if n_probes is None:
        calc = teacher.calculator()

        def label(record: HessianRecord, index: int) -> HessianRecord:
            atoms = _atoms_in_angstrom(record, to_angstrom)
            hessian = np.asarray(calc.get_hessian(atoms), dtype=np.float64) * to_file
            return replace(record, hessian=hessian)

    else:
        products = _ProductLabeller(teacher, n_probes, probe, seed, to_file)

        def label(record: HessianRecord, index: int) -> HessianRecord:
            atoms = _atoms_in_angstrom(record, to_angstrom)
            return replace(record, product_labels=products(atoms, index))

        metadata["product_labels"] = {"k": n_probes, "probe": probe, "seed": seed}

    def labelled() -> Iterator[HessianRecord]:
        records = tqdm(read_records(source), disable=not progress, unit="structure")
        for index, record in enumerate(records):
            report.n_structures += 1
            keep = n_probes is None and record.hessian is not None
            if keep and not all_structures:
                report.n_kept += 1
                yield record
                continue
            report.n_labelled += 1
            yield label(record, index)

    metadata["hessian_labels"] = {
        "teacher": str(teacher.path),
        "name": teacher.name,
        "labels": "products" if n_probes else "Hessians",
        "structures": (
            "all" if all_structures or n_probes else "without a reference Hessian"
        ),
    }
    write_records(
        out,
        labelled(),
        units,
        metadata=metadata,
        overwrite=overwrite,
        precision=precision,
        product_labels=n_probes,
    )
    return report


class _ProductLabeller:
    """A teacher's Hessian-vector products along seeded probes, per structure."""

    def __init__(self, teacher, n_probes: int, probe: str, seed: int, to_file: float):
        self.teacher = Teacher(
            teacher.model, teacher.energy_key, energy_scale=teacher.energy_to_ev
        )  # products in eV/Å², then in the file's unit
        self.converter = spk.interfaces.AtomsConverter(
            neighbor_list=trn.MatScipyNeighborList(cutoff=teacher.cutoff),
            dtype=torch.float64,
            device=teacher.device,
        )
        self.n_probes, self.probe, self.seed = n_probes, probe, seed
        self.to_file = to_file

    def __call__(self, atoms: Atoms, index: int) -> ProductLabels:
        """Labels of one structure (Å): probes and products ``(N, k, 3)``."""
        batch = self.converter([atoms])
        generator = torch.Generator(device=batch["_positions"].device)
        state = np.random.SeedSequence([self.seed, index]).generate_state(1)[0]
        generator.manual_seed(int(state))
        probes = sample_probes(
            self.probe, self.n_probes, batch["_n_atoms"], torch.float64, generator
        )
        products = self.teacher.hvp(batch, probes) * self.to_file
        return ProductLabels(
            probes.transpose(0, 1).cpu().numpy(),
            products.transpose(0, 1).cpu().numpy(),
        )
