"""Fixtures for the data tests (helpers live in :mod:`schnetpack_hessian.data.testing`)."""

from typing import List

import pytest
from ase import Atoms

from schnetpack_hessian.data.testing import make_atoms


@pytest.fixture
def structures() -> List[Atoms]:
    """Twelve random molecules (2, 3, 5 atoms), every fourth without a Hessian."""
    return make_atoms()
