"""A small PaiNN fitted to one real reaction (HNO → HON) of the shipped set.

Physics tests of the evaluation (frequencies, TS searches) need a model with real
minima and a saddle point; a randomly initialised network has neither.  Fitting
energies, forces and Hessians of the reaction's 25 structures in float64 takes a few
seconds and gives one.
"""

from pathlib import Path

import fasteners
import numpy as np
import pytest
import torch

import schnetpack as spk
import schnetpack.properties as spk_properties

from schnetpack_hessian import Hessian, properties
from schnetpack_hessian.data import iread
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.layout import square_to_blocks
from schnetpack_hessian.testing import build_batch, make_potential

REACTION = 1  # HNO -> HON (1,2-H shift), three atoms, bent minima


@pytest.fixture(scope="session")
def reaction_structures():
    """The reaction's reactant, product, TS, IRC and NMS structures (ASE units)."""
    return [a for a in iread(reactive_set_path()) if a.info["reaction"] == REACTION]


@pytest.fixture(scope="session")
def fitted_model_file(reaction_structures, tmp_path_factory, worker_id):
    """``torch.save``-d model (eV, Å) fitted to the reaction's E, F and H, once per
    test run: the xdist workers share the file (their temporary folders' parent is
    the run's own)."""
    if worker_id == "master":
        return _fit(reaction_structures, tmp_path_factory.mktemp("model"))
    shared = tmp_path_factory.getbasetemp().parent
    with fasteners.InterProcessLock(str(shared / "fitted_model.lock")):
        path = shared / "fitted_model" / "best_model"
        if not path.exists():
            _fit(reaction_structures, path.parent)
    return path


def _fit(reaction_structures, folder: Path) -> Path:
    """Fit the model and write it to ``folder/best_model``."""
    torch.set_num_threads(1)
    model = make_potential(
        "painn",
        [Hessian(mode="full", keys=dict(hessian=properties.hessian))],
        n_atom_basis=24,
        smooth=True,
        epsilon=1e-6,
        seed=0,
    )
    batch = build_batch(reaction_structures)
    energy = torch.tensor([a.get_potential_energy() for a in reaction_structures])
    offset = float(energy.mean())
    forces = torch.tensor(np.concatenate([a.get_forces() for a in reaction_structures]))
    hessian = torch.cat(
        [torch.tensor(square_to_blocks(a.info["hessian"])) for a in reaction_structures]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(500):
        optimizer.zero_grad()
        out = model({k: v.clone() for k, v in batch.items()})
        loss = (
            ((out["energy"] + offset - energy) ** 2).mean()
            + ((out[spk_properties.forces] - forces) ** 2).mean()
            + 0.1 * ((out[properties.hessian] - hessian) ** 2).mean()
        )
        loss.backward()
        optimizer.step()
    model.eval()
    model.postprocessors = torch.nn.ModuleList(
        [
            spk.transform.AddOffsets(
                "energy",
                add_mean=True,
                is_extensive=False,
                property_mean=torch.tensor(offset, dtype=torch.float64),
            )
        ]
    )
    model.do_postprocessing = True
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "best_model"
    torch.save(model, path.with_name("best_model.partial"))
    path.with_name("best_model.partial").replace(path)
    return path
