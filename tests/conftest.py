"""Shared fixtures: a mixed batch of real molecules and small float64 models."""

import pytest
import torch

from schnetpack_hessian.testing import build_batch, reference_molecules


@pytest.fixture(scope="session")
def molecules():
    """H2O, CH4, C2H6 and a TS-like HCN, rattled off symmetry."""
    return reference_molecules()


@pytest.fixture()
def batch(molecules):
    """All reference molecules packed in one float64 batch."""
    return build_batch(molecules, dtype=torch.float64)
