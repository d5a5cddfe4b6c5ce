"""Shared fixtures: a mixed batch of real molecules and small float64 models."""

import os

import pytest
import torch

from schnetpack_hessian.testing import build_batch, reference_molecules

# one thread per test process (the suite runs one worker per core) and per process
# a test starts; small float64 tensors gain nothing from more
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def molecules():
    """H2O, CH4, C2H6 and a TS-like HCN, rattled off symmetry."""
    return reference_molecules()


@pytest.fixture()
def batch(molecules):
    """All reference molecules packed in one float64 batch."""
    return build_batch(molecules, dtype=torch.float64)


def pytest_collection_modifyitems(config, items):
    """The 10-minute limit per test (pyproject.toml) guards the default suite against
    hangs; the slow set's quantum chemistry and studies may run longer."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(0))
