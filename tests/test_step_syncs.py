"""A Hessian training step reads no device value on the host (outside metrics logging).

The steps run as ``spktrain`` runs them: a Lightning ``Trainer`` fits a
``HessianTask`` on a collated mixed-size batch of real molecules; the counter
(:mod:`schnetpack_hessian.syncs`) follows where a GPU would keep each tensor.
"""

import pytest
import torch

from schnetpack_hessian.steps import (
    TRAINING_MODES,
    StepMonitor,
    labelled_batch,
    train_steps,
    training_task,
)
from schnetpack_hessian.testing import build_batch, reference_molecules

#: SchNetPack's Atomwise sums the atoms with ``maxm = int(idx_m[-1]) + 1``: the one
#: host read of a step that is not this package's
UPSTREAM = [("schnetpack", "int", "atomwise.py", "forward")]


def _signature(event):
    file, rest = event.where.split(":", 1)
    return (event.origin, event.kind, file, rest.split(" in ")[1])


@pytest.fixture(scope="module")
def collated():
    """H2O, CH4, C2H6 and a TS-like HCN (3, 5, 8 and 3 atoms), collated on the host."""
    return labelled_batch(build_batch(reference_molecules(), dtype=torch.float64))


@pytest.mark.parametrize("mode", TRAINING_MODES)
@pytest.mark.parametrize("rep", ["schnet", "painn"])
def test_training_steps_read_no_device_value_on_the_host(rep, mode, collated):
    task = training_task(rep, mode, n_atom_basis=8, n_interactions=1)
    monitor = train_steps(task, collated, 2, monitor=StepMonitor(count_steps=(0, 1)))
    for step in (0, 1):
        events = monitor.syncs[step]
        counted = [_signature(e) for e in events if e.counts]
        assert counted == UPSTREAM, monitor.syncs[step]
        guards = [e for e in events if e.deliberate == "non-finite loss guard"]
        assert len(guards) == 1 and guards[0].origin == "schnetpack_hessian"
    # the symmetry check of the full Hessian runs once per module, in the first step
    checks = [
        [e for e in monitor.syncs[step] if e.deliberate == "one-time invariance check"]
        for step in (0, 1)
    ]
    assert [len(c) for c in checks] == ([1, 0] if mode == "full" else [0, 0])


def test_the_loss_knows_the_probe_scheme_from_the_task():
    """HessianTask declares the module's probes to the loss (no probe reads)."""
    task = training_task("schnet", "rows")
    assert task.outputs[-1].probe == "rows"
    assert training_task("schnet", "hvp").outputs[-1].probe == "gaussian"
    assert training_task("schnet", "full").outputs[-1].probe is None
