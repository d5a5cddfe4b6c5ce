"""Batched model predictions for a list of structures, in ASE units.

Structures are packed into SchNetPack batches and run through the model once per
batch; Hessians come from the package's batched full Hessian (one set of seeded
passes per batch, float64), never from a loop over structures or finite differences.
A batch's full Hessian costs ``3·max(N) − 6`` seeded passes whatever the other
molecules' sizes, so structures are batched in order of size (small with small) and
the predictions returned in input order.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from tqdm import tqdm

import schnetpack as spk
import schnetpack.transform as trn

from schnetpack_hessian.calculator import hessians_computed
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.evaluation.model import EvaluationModel
from schnetpack_hessian.layout import split_squares
from schnetpack_hessian.quantities import Dimension, Quantity

__all__ = ["Prediction", "predict"]


@dataclass(frozen=True)
class Prediction:
    """A model's energy, forces and Hessian for one structure (ASE units).

    Attributes:
        energy: total energy in eV, a :class:`~schnetpack_hessian.quantities.Quantity`
            (a plain number given is typed as an energy).
        forces: ``(N, 3)`` in eV/Å.
        hessian: ``(3N, 3N)`` in eV/Å², None if not computed.
    """

    energy: Quantity
    forces: np.ndarray
    hessian: Optional[np.ndarray]

    def __post_init__(self) -> None:
        energy = self.energy
        if isinstance(energy, Quantity) and energy.dimension is not Dimension.ENERGY:
            raise TypeError(f"Prediction.energy: expected an energy, got {energy!r}")
        object.__setattr__(self, "energy", Quantity(energy, Dimension.ENERGY))


def predict(
    model: EvaluationModel,
    structures: Sequence[HessianRecord],
    batch_size: int = 16,
    hessian: bool = True,
    progress: bool = False,
) -> List[Prediction]:
    """Energies, forces and (optionally) exact Hessians of ``structures``.

    Args:
        model: the loaded model.
        structures: molecules with positions ``(N, 3)`` in Å (only numbers and
            positions are read).
        batch_size: structures per model call.
        hessian: compute full Hessians.
        progress: show a progress bar.

    Returns:
        One :class:`Prediction` per structure, in eV, eV/Å, eV/Å².
    """
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=trn.MatScipyNeighborList(cutoff=model.cutoff),
        device=model.device,
        dtype=torch.float64,
    )
    to_model = model.angstrom_to_model
    e = model.energy_to_ev
    f = e * to_model
    h = e * to_model**2
    # stable sort by size: batches of similar molecules need fewer seeded passes
    order = sorted(range(len(structures)), key=lambda i: structures[i].n_atoms)
    out: List[Optional[Prediction]] = [None] * len(structures)
    starts = range(0, len(structures), batch_size)
    for start in tqdm(starts, desc="model", unit="batch", disable=not progress):
        members = order[start : start + batch_size]
        # the model's input converter reads Atoms: built here, in model units
        chunk = [
            Atoms(numbers=r.numbers, positions=np.asarray(r.positions) * to_model)
            for r in (structures[i] for i in members)
        ]
        inputs = converter(chunk)
        with hessians_computed(model.model, hessian):
            results = model.model(inputs)
        n_atoms = [len(a) for a in chunk]
        energy = results[model.energy_key].detach().cpu().numpy().reshape(-1)
        forces = results[model.force_key].detach().cpu().numpy()
        bounds = np.cumsum([0] + n_atoms)
        hessians: List[Optional[np.ndarray]] = [None] * len(chunk)
        if hessian:
            blocks = results[model.hessian_key].detach().cpu().numpy()
            hessians = [m * h for m in split_squares(blocks, n_atoms)]
        for k, index in enumerate(members):
            out[index] = Prediction(
                energy=float(energy[k]) * e,
                forces=forces[bounds[k] : bounds[k + 1]] * f,
                hessian=hessians[k],
            )
    return out  # type: ignore[return-value]  (every slot filled)
