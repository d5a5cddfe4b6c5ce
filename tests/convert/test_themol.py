"""THEMol's Hessian and HessianRelax shards (kcal/mol, Å) → training files → iread in
eV/Å, with the units converted once; foreign layouts refused by name."""

import uuid

import h5py
import numpy as np
import pytest

from schnetpack_hessian import properties as P
from schnetpack_hessian.cli.convert import main
from schnetpack_hessian.convert import (
    ConversionError,
    convert,
    guess_format,
    open_source,
)
from schnetpack_hessian.convert.themol import UNITS
from schnetpack_hessian.data import file_metadata, file_units, iread, write
from schnetpack_hessian.data.testing import make_atoms
from schnetpack_hessian.data.units import conversion_factor

#: eV → kcal/mol, to write the fixture in THEMol's units.
KCAL = conversion_factor("eV", "kcal/mol")
STRING = h5py.string_dtype("utf-8")


def _uuid(smiles: str) -> str:
    """THEMol's key: uuid5 of the mapped isomeric SMILES in the zero namespace."""
    return uuid.uuid5(uuid.UUID(int=0), smiles).hex


def _molecule_group(f: h5py.File, numbers, tag: str) -> h5py.Group:
    smiles = ".".join(f"[#{z}:{i + 1}]" for i, z in enumerate(numbers)) + tag
    grp = f.create_group(_uuid(smiles))
    grp.create_dataset("mapped_nonisomeric_smiles", data=smiles, dtype=STRING)
    grp.create_dataset("mapped_isomeric_smiles", data=smiles, dtype=STRING)
    grp["atomic_numbers"] = np.asarray(numbers, dtype=np.int32).reshape(-1, 1)
    return grp


def write_hessian_shard(path, records):
    """A ``Hessian/hessian_<k>.h5`` shard: one group per molecule with coords [Å]
    and the (3N, 3N) Hessian [kcal/mol/Å²], nothing else."""
    with h5py.File(path, "w") as f:
        for k, rec in enumerate(records):
            grp = _molecule_group(f, rec.numbers, f"h{path.stem}{k}")
            grp["coords"] = np.asarray(rec.positions, dtype=np.float64)
            grp["hessian"] = np.asarray(rec.hessian, dtype=np.float64) * KCAL


def write_relax_shard(path, trajectories):
    """A ``HessianRelax/relax_<k>.h5`` shard: per molecule ``step k`` groups with
    energy [kcal/mol], coords [Å] and forces [kcal/mol/Å]."""
    with h5py.File(path, "w") as f:
        for k, recs in enumerate(trajectories):
            grp = _molecule_group(f, recs[0].numbers, f"r{path.stem}{k}")
            for s, rec in enumerate(recs):
                step = grp.create_group(f"step {s}")
                step["energy"] = np.float64(rec.energy * KCAL)
                step["coords"] = np.asarray(rec.positions, dtype=np.float64)
                step["forces"] = np.asarray(rec.forces, dtype=np.float64) * KCAL


@pytest.fixture
def minima(quadratic_path):
    """Three molecules with exact Hessians (the relaxed structures of the subset)."""
    return [
        quadratic_path(z, 1, seed=s)[0]
        for s, z in enumerate(([8, 1, 1], [6, 1, 1, 1, 1], [7, 6, 1, 1, 1, 8]))
    ]


@pytest.mark.parametrize("suffix", ["h5", "db"])
def test_hessian_subset_roundtrips_to_iread_in_ev(tmp_path, minima, suffix):
    shard = tmp_path / "hessian_0.h5"
    write_hessian_shard(shard, minima)
    with h5py.File(shard, "r") as f:
        stored = {k: f[k]["hessian"][()] for k in f}
    out = tmp_path / f"themol.{suffix}"
    assert main([str(shard), "-o", str(out), "--quiet"]) == 0  # spkhess-convert
    assert file_units(out) == UNITS
    md = file_metadata(out)
    assert md["source"] == "THEMol" and md["level_of_theory"] == "B3LYP-D3(BJ)/DZVP"
    assert md["subsets"] == ["Hessian"]
    to_ev = conversion_factor("kcal/mol/Ang/Ang", "eV/Ang/Ang")
    back = list(iread(out))
    with h5py.File(shard, "r") as f:
        keys = list(f.keys())
    assert len(back) == 3 and all(a.info[P.hessian] is not None for a in back)
    for atoms, key in zip(back, keys):
        rec = next(r for r in minima if len(r.numbers) == len(atoms))
        np.testing.assert_array_equal(atoms.numbers, rec.numbers)
        np.testing.assert_array_equal(atoms.positions, rec.positions)
        np.testing.assert_array_equal(atoms.info[P.hessian], stored[key] * to_ev)
        np.testing.assert_allclose(atoms.info[P.hessian], rec.hessian, rtol=1e-12)
        assert atoms.calc.results == {}  # the subset has no energy and no forces
        assert atoms.info[P.kind] == "other" and atoms.info[P.reaction] == -1
    assert main(["--check", str(out), "--quiet"]) == 0


def test_folder_of_shards_in_shard_order(tmp_path, minima):
    folder = tmp_path / "Hessian"
    folder.mkdir()
    for k, rec in zip((10, 0, 2), minima):
        write_hessian_shard(folder / f"hessian_{k}.h5", [rec])
    assert guess_format([folder]) == "themol"
    source = open_source([folder])
    assert source.total == 3 and source.units == UNITS
    sizes = [len(r.numbers) for r in source.records]
    assert sizes == [len(minima[1].numbers), len(minima[2].numbers), 3]


def test_relax_subset_energies_and_forces(tmp_path, quadratic_path):
    trajectories = [
        quadratic_path([8, 1, 1], 4, seed=3, step=0.01),
        quadratic_path([6, 1, 1, 8], 3, seed=4, step=0.01),
    ]
    shard = tmp_path / "relax_0.h5"
    write_relax_shard(shard, trajectories)
    out = tmp_path / "relax.h5"
    report = convert([shard], out)
    assert report.n_structures == 7 and report.n_hessians == 0
    md = file_metadata(out)
    assert md["subsets"] == ["HessianRelax"]
    assert md["forces_convention"].startswith("forces (-dE/dR), checked on")
    e_ev = conversion_factor("kcal/mol", "eV")
    f_ev = conversion_factor("kcal/mol/Ang", "eV/Ang")
    with h5py.File(shard, "r") as f:
        stored = [
            (f[g][s]["energy"][()], f[g][s]["forces"][()])
            for g in f
            for s in sorted(f[g], key=lambda k: (len(k), k))
            if s.startswith("step ")
        ]
    back = list(iread(out))
    for atoms, (energy, forces) in zip(back, stored):
        assert atoms.get_potential_energy() == energy * e_ev
        np.testing.assert_array_equal(atoms.get_forces(), forces * f_ev)
        assert atoms.info[P.hessian] is None
    groups = [a.info[P.reaction] for a in back]
    sizes = {g: groups.count(g) for g in set(groups)}
    assert sorted(sizes.values()) == [3, 4] and len(set(groups)) == 2
    assert main(["--check", str(out), "--quiet"]) == 0


def test_gradients_stored_as_forces_are_detected(tmp_path, quadratic_path):
    recs = quadratic_path([8, 1, 1], 4, seed=3, step=0.01)
    flipped = [r.__class__(**{**r.__dict__, "forces": -r.forces}) for r in recs]
    shard = tmp_path / "relax_0.h5"
    write_relax_shard(shard, [flipped])
    got = list(open_source([shard]).records)
    np.testing.assert_allclose(got[1].forces, recs[1].forces * KCAL, rtol=1e-12)


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda g: g.__setitem__("hessian", np.zeros((4, 4))) or None,
            r"hessian has shape \(4, 4\) and dtype float64, expected \(9, 9\)",
        ),
        (
            lambda g: g.__setitem__(
                "atomic_numbers", np.array([8, 1, 1], dtype=np.int32)
            ),
            r"atomic_numbers has shape \(3,\) .*expected \(N, 1\)",
        ),
        (lambda g: g.__delitem__("coords"), "is neither a THEMol Hessian entry"),
    ],
)
def test_a_broken_group_is_named(tmp_path, minima, edit, message):
    shard = tmp_path / "hessian_0.h5"
    write_hessian_shard(shard, [minima[1], minima[0]])
    with h5py.File(shard, "a") as f:
        name = [k for k in f if len(f[k]["atomic_numbers"]) == 3][0]
        if "hessian" in message:
            del f[name]["hessian"]
        if "atomic_numbers" in message:
            del f[name]["atomic_numbers"]
        edit(f[name])
    index = sorted([name, next(k for k in h5py.File(shard, "r") if k != name)])
    index = index.index(name)
    with pytest.raises(ConversionError, match=f"hessian_0.h5: structure {index}"):
        convert([shard], tmp_path / "out.h5", fmt="themol")
    with pytest.raises(ConversionError, match=message):
        convert([shard], tmp_path / "out.h5", fmt="themol")
    assert not (tmp_path / "out.h5").exists()


def test_files_in_other_layouts_are_refused(tmp_path, minima, write_openreact):
    anitools = tmp_path / "molecules-RTP.h5"
    write_openreact(anitools, {"/rxn000": [minima[0]]})
    assert guess_format([anitools]) == "openreact"
    with pytest.raises(
        ConversionError,
        match=r"molecules-RTP.h5: group 'rxn000' is neither a THEMol Hessian entry",
    ):
        list(open_source([anitools], fmt="themol").records)
    training = tmp_path / "train.h5"
    write(training, make_atoms(2))
    with pytest.raises(ConversionError, match="train.h5: is a schnetpack-hessian"):
        open_source([training], fmt="themol")
    empty = tmp_path / "hessian_1.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(ConversionError, match="hessian_1.h5: holds no THEMol molecule"):
        open_source([empty], fmt="themol")
