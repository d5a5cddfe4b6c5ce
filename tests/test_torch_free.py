"""Modules that must import without torch: the record (``HessianRecord`` is the
generator's structure too) and the generator, whose tblite extension fails to load
once torch has loaded its own libgomp (docs/ARCHITECTURE.md).  Reading and writing
training files needs no torch either, so the generator's commands do not load it."""

import subprocess
import sys

import pytest

TORCH_FREE = [
    "schnetpack_hessian.layout",
    "schnetpack_hessian.data",
    "schnetpack_hessian.data.record",
    "schnetpack_hessian.generate.store",
    "schnetpack_hessian.generate.calculators",
    "schnetpack_hessian.generate.pathsearch",
    "schnetpack_hessian.generate.workflow",
    "schnetpack_hessian.generate",
    "schnetpack_hessian.cli.generate",
]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_without_torch(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, 'torch loaded'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"import {module}: {proc.stderr}"


def test_training_files_are_written_and_read_without_torch(tmp_path):
    code = f"""
import sys
from schnetpack_hessian import data
from schnetpack_hessian.data.testing import make_atoms
for suffix in ("h5", "db"):
    path = "{tmp_path}/set." + suffix
    data.write(path, make_atoms(n_structures=3, seed=0))
    assert len(list(data.iread(path))) == 3
    assert data.file_units(path)["hessian"] == "eV/Ang/Ang"
assert "torch" not in sys.modules, "torch loaded"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
