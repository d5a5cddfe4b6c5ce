"""spkhess-generate label: a teacher model's Hessians written into a training file."""

import numpy as np
import pytest
from ase import Atoms

from schnetpack_hessian.cli.generate import main
from schnetpack_hessian.data import file_metadata, iread, write
from schnetpack_hessian.data.io import read_records
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian.evaluation.model import load_model
from schnetpack_hessian.testing import logged_validation, train_tiny

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


def test_probes_store_the_teachers_products_along_seeded_probes(source, tmp_path):
    """--probes 2 --probe rows: every structure gets 2 rows of the teacher's exact
    Hessian with their one-hot probes; reference Hessians stay; a second run with
    the same seed writes the same labels."""
    out = tmp_path / "rows.h5"
    argv = ["label", str(source), "--teacher", TEACHER, "--out", str(out)]
    argv += ["--probes", "2", "--probe", "rows", "--seed", "3"]
    assert main(argv) == 0
    calc = load_model(TEACHER).calculator()
    records = list(read_records(out))
    assert file_metadata(out)["product_labels"] == {"k": 2, "probe": "rows", "seed": 3}
    for old, record in zip(iread(source), records):
        n = len(old)
        labels = record.product_labels
        assert labels.probes.shape == labels.products.shape == (n, 2, 3)
        v = labels.probes.transpose(1, 0, 2).reshape(2, 3 * n)
        assert set(np.unique(v)) == {0.0, 1.0} and (v.sum(1) == 1).all()
        expected = v @ _teacher_hessian(calc, old).T  # eV/Å², the file's unit
        np.testing.assert_allclose(
            labels.products.transpose(1, 0, 2).reshape(2, 3 * n),
            expected,
            rtol=1e-9,
            atol=1e-9,
        )
        if old.info["hessian"] is not None:
            np.testing.assert_array_equal(record.hessian, old.info["hessian"])
    again = tmp_path / "again.h5"
    assert main(argv[:5] + [str(again)] + argv[6:]) == 0
    for a, b in zip(records, read_records(again)):
        np.testing.assert_array_equal(a.product_labels.probes, b.product_labels.probes)


@pytest.mark.integration
def test_spktrain_trains_on_stored_product_labels(tmp_path):
    """label --probes → spktrain in HVP mode along the stored probes
    (globals.hessian_target=hvp), the data's Hessian loss replaced by the labels'."""
    source = tmp_path / "ef.h5"
    write(source, make_atoms(n_structures=24, seed=4, missing_every=1, sizes=(3, 4)))
    labelled = tmp_path / "rows.h5"
    argv = ["label", str(source), "--teacher", TEACHER, "--out", str(labelled)]
    assert main(argv + ["--probes", "2", "--probe", "rows"]) == 0
    run = train_tiny(
        [
            "experiment=reactive_efh",
            f"data.datapath={labelled}",
            "globals.hessian_mode=hvp",
            "globals.hessian_target=hvp",
            "globals.probe=rows",
            "globals.n_probes=2",
        ],
        cwd=tmp_path / "train",
    )
    values = logged_validation(run, "val_hessian_MAE")
    assert len(values) == 2 and all(v > 0 for v in values)
