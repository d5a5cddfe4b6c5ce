"""spkhess-generate label: a teacher model's Hessians written into a training file."""

import numpy as np
import pytest
from ase import Atoms

from schnetpack_hessian.cli.generate import main
from schnetpack_hessian.data import file_metadata, iread, write
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian.evaluation.model import load_model

TEACHER = "pretrained:chon-xtb-efh"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Ten structures, every second one without a Hessian (eV, Å)."""
    path = tmp_path_factory.mktemp("label") / "ef_mixed.h5"
    write(path, make_atoms(n_structures=10, seed=5, missing_every=2, sizes=(3, 4)))
    return path


def _teacher_hessian(calc, atoms):
    bare = Atoms(numbers=atoms.numbers, positions=atoms.positions)
    return calc.get_hessian(bare)


def test_structures_without_a_hessian_get_the_teachers(source, tmp_path):
    out = tmp_path / "labelled.h5"
    assert main(["label", str(source), "--teacher", TEACHER, "--out", str(out)]) == 0
    before, after = list(iread(source)), list(iread(out))
    calc = load_model(TEACHER).calculator()
    assert len(after) == len(before) == 10
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new.positions, old.positions)
        assert new.get_potential_energy() == old.get_potential_energy()
        np.testing.assert_array_equal(new.get_forces(), old.get_forces())
        assert (new.info["kind"], new.info["reaction"]) == (
            old.info["kind"],
            old.info["reaction"],
        )
        if old.info["hessian"] is not None:  # the reference is kept
            np.testing.assert_array_equal(new.info["hessian"], old.info["hessian"])
        else:
            np.testing.assert_allclose(
                new.info["hessian"], _teacher_hessian(calc, old), rtol=0, atol=1e-10
            )
    labels = file_metadata(out)["hessian_labels"]
    assert labels["name"] == "chon-xtb-efh" and "without" in labels["structures"]
    # the input is untouched and an existing output is not replaced silently
    assert sum(a.info["hessian"] is None for a in iread(source)) == 5
    assert main(["label", str(source), "--teacher", TEACHER, "--out", str(out)]) != 0


def test_all_replaces_reference_hessians_too(source, tmp_path):
    out = tmp_path / "all.db"
    argv = ["label", str(source), "--teacher", TEACHER, "--out", str(out), "--all"]
    assert main(argv) == 0
    calc = load_model(TEACHER).calculator()
    for old, new in zip(iread(source), iread(out)):
        np.testing.assert_allclose(
            new.info["hessian"], _teacher_hessian(calc, old), rtol=0, atol=1e-10
        )
