"""Loading is as strict as --check, and files are left tidy: partly-NaN or misshapen
stored Hessians are refused with file and index; stale partial files of killed runs
are removed; missing output folders and read-only places behave."""

import os
import re
import subprocess
import sys

import fasteners
import h5py
import numpy as np
import pytest
from ase.db import connect
from schnetpack.data import ASEAtomsData

from schnetpack_hessian.cli.convert import main
from schnetpack_hessian.data import (
    HessianDataError,
    HessianDataModule,
    iread,
    open_dataset,
    write,
)
from schnetpack_hessian.data.io import partial_path, remove_stale_partials
from schnetpack_hessian.data.testing import make_atoms


@pytest.fixture
def h5_file(tmp_path):
    path = tmp_path / "data.h5"
    write(path, make_atoms(6, missing_every=0))
    return path


def _dm(path, **kwargs):
    args = dict(batch_size=2, num_train=2, num_val=2, num_workers=0)
    args.update(kwargs)
    return HessianDataModule(str(path), **args)


def test_partly_nan_hessian_in_h5_refused(h5_file):
    with h5py.File(h5_file, "a") as f:
        n = f["n_atoms"][:]
        start = int(np.sum(n[:3] ** 2))  # first block of structure 3
        f["properties/hessian"][start + 1] = np.nan
    with pytest.raises(HessianDataError, match="data.h5, structure 3: .*partially NaN"):
        list(iread(h5_file))
    ds = open_dataset(h5_file)
    ds[2]
    with pytest.raises(HessianDataError, match="data.h5, structure 3: .*partially NaN"):
        ds[3]
    with pytest.raises(HessianDataError, match="structure 3"):
        ds.has_hessian()
    dm = _dm(h5_file, split_file=None, splitting="random")
    dm.setup()
    with pytest.raises(HessianDataError, match="structure 3: .*partially NaN"):
        dm.dataset[3]


def test_only_all_nan_means_missing(h5_file):
    with h5py.File(h5_file, "a") as f:
        n = f["n_atoms"][:]
        start, stop = int(np.sum(n[:1] ** 2)), int(np.sum(n[:2] ** 2))
        f["properties/hessian"][start:stop] = np.nan
    assert open_dataset(h5_file).has_hessian().tolist() == [1, 0, 1, 1, 1, 1]
    assert (
        next(a for i, a in enumerate(iread(h5_file)) if i == 1).info["hessian"] is None
    )


def test_wrong_stored_shape_in_db_refused(tmp_path):
    path = tmp_path / "data.db"
    write(path, make_atoms(4, missing_every=0))
    with connect(str(path), use_lock_file=False) as conn:
        row = conn.get(id=3)
        data = dict(row.data)
        data["hessian"] = data["hessian"][:-1]
        conn.update(3, data=data)
    with pytest.raises(HessianDataError, match="data.db, structure 2: stored hessian"):
        list(iread(path))
    with pytest.raises(HessianDataError, match="data.db, structure 2: stored hessian"):
        open_dataset(path)[2]


def test_stale_partials_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path / "out.h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [
        partial_path(out, dead.pid),
        tmp_path / f".out.h5.partial-{dead.pid}-journal",
    ]
    for p in stale:
        p.write_text("half")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        running = partial_path(out, alive.pid)
        running.write_text("in progress")
        write(out, make_atoms(2))
        assert not any(p.exists() for p in stale)
        assert running.exists()  # another run still writes it
        assert remove_stale_partials(out) == []
    finally:
        alive.kill()
        alive.wait()
    assert remove_stale_partials(out) == [running]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_missing_output_directory_needs_mkdir(tmp_path, capsys):
    src = tmp_path / "in.h5"
    write(src, make_atoms(2, missing_every=0))
    out = tmp_path / "new" / "out.h5"
    assert main(["--quiet", "--physics", "off", str(src), "-o", str(out)]) == 1
    assert "does not exist; create it or pass --mkdir" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert (
        main(["--quiet", "--physics", "off", str(src), "-o", str(out), "--mkdir"]) == 0
    )
    assert out.exists()


def test_no_split_file_needs_no_writable_directory(h5_file, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only directory")

    monkeypatch.setattr(fasteners, "InterProcessLock", refuse)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    os.chmod(h5_file, 0o444)
    dm = _dm(h5_file, split_file=None, splitting="random")
    dm.setup()
    assert len(dm.train_idx) == 2
    assert list(work.iterdir()) == []


def test_energy_only_schnetpack_db_still_reads(tmp_path):
    from schnetpack.data import ASEAtomsData

    path = tmp_path / "qm9like.db"
    ds = ASEAtomsData.create(
        str(path), distance_unit="Ang", property_unit_dict={"energy": "eV"}
    )
    ds.add_systems(
        [
            {
                "_atomic_numbers": np.array([8, 1, 1]),
                "_positions": np.eye(3),
                "_cell": np.zeros((3, 3)),
                "_pbc": np.zeros(3, dtype=bool),
                "energy": np.array([-2.5]),
            }
        ]
    )
    (atoms,) = iread(path)
    assert atoms.get_potential_energy() == -2.5 and atoms.info["hessian"] is None


def test_energy_only_schnetpack_db_geometry_is_checked(tmp_path):
    path = tmp_path / "collapsed.db"
    ds = ASEAtomsData.create(
        str(path), distance_unit="Ang", property_unit_dict={"energy": "eV"}
    )
    ds.add_systems(
        [
            {
                "_atomic_numbers": np.array([8, 1, 1]),
                "_positions": np.zeros((3, 3)),
                "_cell": np.zeros((3, 3)),
                "_pbc": np.zeros(3, dtype=bool),
                "energy": np.array([-2.5]),
            }
        ]
    )
    message = "collapsed.db, structure 0: degenerate geometry: all 3 atoms lie within 0"
    with pytest.raises(HessianDataError, match=message):
        list(iread(path))
    with pytest.raises(HessianDataError, match=message):
        open_dataset(path)[0]


@pytest.mark.parametrize("name,value", [("forces", np.inf), ("energy", np.inf)])
def test_non_finite_forces_or_energy_refused(h5_file, name, value):
    with h5py.File(h5_file, "a") as f:
        n = f["n_atoms"][:]
        row = int(np.sum(n[:2])) if name == "forces" else 2
        f[f"properties/{name}"][row] = value
    pattern = f"data.h5, structure 2: stored {name} contains NaN or infinite"
    with pytest.raises(HessianDataError, match=pattern):
        list(iread(h5_file))
    with pytest.raises(HessianDataError, match=pattern):
        open_dataset(h5_file)[2]


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda f, a0: f["positions"].__setitem__(a0 + 1, f["positions"][a0]),
            "atoms 0 and 1 are 0 Ang apart",
        ),
        (
            lambda f, a0: f["properties/energy"].__setitem__(2, [-5e6]),
            r"energy -5e\+06 eV is 1e\+06 eV per atom",
        ),
    ],
)
def test_poisonous_structures_refused_when_loaded(h5_file, edit, message, capsys):
    with h5py.File(h5_file, "a") as f:
        edit(f, int(np.sum(f["n_atoms"][:2])))  # structure 2 (5 atoms)
    pattern = f"data.h5, structure 2: {message}"
    with pytest.raises(HessianDataError, match=pattern):
        list(iread(h5_file))
    dm = _dm(h5_file, split_file=None, splitting="random")
    dm.setup()
    dm.dataset[1]
    with pytest.raises(HessianDataError, match=pattern):
        dm.dataset[2]
    assert main(["--check", str(h5_file)]) == 1
    assert re.search(pattern, capsys.readouterr().err)


def _db_from_arrays(path, atoms_list, dtype):
    """A plain SchNetPack ``.db`` whose arrays are stored as ``dtype`` (ASE keeps
    the raw bytes and drops the byte order)."""
    ds = ASEAtomsData.create(
        str(path),
        distance_unit="Ang",
        property_unit_dict={"energy": "eV", "forces": "eV/Ang"},
    )
    ds.add_systems(
        [
            {
                "energy": np.array([a.get_potential_energy()], dtype=dtype),
                "forces": np.asarray(a.get_forces(), dtype=dtype),
            }
            for a in atoms_list
        ],
        atoms_list,
    )


def test_big_endian_db_arrays_load_as_stored(tmp_path):
    atoms = make_atoms(3, missing_every=0)
    path = tmp_path / "big.db"
    _db_from_arrays(path, atoms, ">f8")
    with connect(path) as conn:
        garbage = conn.get(1).data["energy"][0]  # ASE reads the bytes as little-endian
    assert garbage != atoms[0].get_potential_energy()
    for a, b in zip(atoms, iread(path)):
        assert b.get_potential_energy() == a.get_potential_energy()
        np.testing.assert_array_equal(b.get_forces(), a.get_forces())
    ds = open_dataset(path)
    assert ds[1]["energy"].item() == atoms[1].get_potential_energy()
    np.testing.assert_array_equal(ds[2]["forces"].numpy(), atoms[2].get_forces())


def test_extra_property_without_per_is_a_sentence(h5_file, capsys):
    with h5py.File(h5_file, "a") as f:
        f["properties"].create_dataset("dipole", data=np.zeros((6, 3)))
    message = "data.h5: property 'dipole' has per=None; every dataset in /properties"
    with pytest.raises(HessianDataError, match=message):
        open_dataset(h5_file)
    with pytest.raises(HessianDataError, match=message):
        _dm(h5_file, split_file=None, splitting="random").setup()
    assert main(["--check", str(h5_file)]) == 1
    assert message in capsys.readouterr().err


def test_partly_nan_forces_refused(h5_file):
    """All NaN means "no forces"; one NaN among real forces is a broken file."""
    with h5py.File(h5_file, "a") as f:
        f["properties/forces"][int(np.sum(f["n_atoms"][:2]))] = [np.nan, 0.0, 0.0]
    pattern = "data.h5, structure 2: stored forces is partially NaN"
    with pytest.raises(HessianDataError, match=pattern):
        list(iread(h5_file))
    with pytest.raises(HessianDataError, match=pattern):
        open_dataset(h5_file)[2]
