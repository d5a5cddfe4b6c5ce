"""Hessian QM9 as distributed (a datasets DatasetDict saved to disk: Arrow stream
shards per split) → training files → iread, eV/Å throughout; the Hessian's unit is
checked against the file's own frequencies; other layouts are refused by name."""

import json

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
from schnetpack_hessian.convert.hessian_qm9 import UNITS
from schnetpack_hessian.data import file_metadata, file_units, iread
from schnetpack_hessian.data.units import conversion_factor
from schnetpack_hessian.vibrations import EV_A2_AMU_TO_CM1

pa = pytest.importorskip("pyarrow")
SPLITS = ["vacuum", "thf", "toluene", "water"]


def _frequencies(hessian, numbers):
    """(3N, 2) wavenumbers of the unprojected mass-weighted Hessian: column 0 real,
    column 1 the magnitude of an imaginary one (the distributed layout)."""
    from ase.data import atomic_masses

    m = np.repeat(atomic_masses[numbers], 3)
    lam = np.linalg.eigvalsh(hessian / np.sqrt(np.outer(m, m)))
    nu = np.sqrt(np.abs(lam)) * EV_A2_AMU_TO_CM1
    return np.stack([np.where(lam >= 0, nu, 0.0), np.where(lam < 0, nu, 0.0)], axis=1)


def _row(rec, label, hessian_scale=1.0):
    n = rec.n_atoms
    h = np.asarray(rec.hessian)
    return {
        "energy": float(rec.energy),
        "positions": rec.positions.tolist(),
        "atomic_numbers": [int(z) for z in rec.numbers],
        "forces": rec.forces.tolist(),
        "frequencies": _frequencies(h, rec.numbers).tolist(),
        "normal_modes": np.eye(3 * n).tolist(),
        "hessian": (hessian_scale * h).reshape(n, 3, n, 3).tolist(),
        "label": label,
    }


def write_split(folder, rows, n_shards=2):
    """One split as ``save_to_disk`` writes it: Arrow stream shards, dataset_info.json
    and state.json."""
    folder.mkdir(parents=True)
    chunks = np.array_split(np.arange(len(rows)), n_shards)
    for k, idx in enumerate(chunks):
        table = pa.Table.from_pylist([rows[i] for i in idx])
        name = f"data-{k:05d}-of-{n_shards:05d}.arrow"
        with pa.ipc.new_stream(str(folder / name), table.schema) as writer:
            writer.write_table(table)
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (folder / "state.json").write_text(json.dumps({"_data_files": []}))


@pytest.fixture
def dataset_dict(tmp_path, quadratic_path):
    molecules = ([8, 1, 1], [6, 1, 1, 1, 1], [7, 6, 1, 1, 1], [6, 8, 1, 1])
    records = [quadratic_path(z, 1, seed=30 + i)[0] for i, z in enumerate(molecules)]
    labels = [f"dsgdb9nsd_{i + 1:06d}" for i in range(len(records))]
    root = tmp_path / "hessian_qm9_DatasetDict"
    for split in SPLITS:
        write_split(root / split, [_row(r, lab) for r, lab in zip(records, labels)])
    (root / "dataset_dict.json").write_text(json.dumps({"splits": SPLITS}))
    return root, records, labels


@pytest.mark.parametrize("suffix", ["h5", "db"])
def test_split_roundtrips_exactly_in_ev(tmp_path, dataset_dict, suffix):
    root, records, _ = dataset_dict
    assert guess_format([root / "vacuum"]) == "hessian-qm9"
    out = tmp_path / f"hqm9.{suffix}"
    assert main([str(root / "vacuum"), "-o", str(out), "--quiet"]) == 0
    assert len(list(iread(out))) == 4
    assert file_units(out) == UNITS
    md = file_metadata(out)
    assert md["source"] == "Hessian QM9" and md["split"] == "vacuum"
    for rec, atoms in zip(records, iread(out)):
        np.testing.assert_array_equal(atoms.numbers, rec.numbers)
        np.testing.assert_array_equal(atoms.positions, rec.positions)
        assert atoms.get_potential_energy() == rec.energy
        np.testing.assert_array_equal(atoms.get_forces(), rec.forces)
        np.testing.assert_array_equal(atoms.info[P.hessian], rec.hessian)
        assert atoms.info[P.kind] == "other" and atoms.info[P.reaction] == -1
    assert main(["--check", str(out), "--quiet"]) == 0


def test_labels_locate_problems_and_single_shards_convert(tmp_path, dataset_dict):
    root, records, labels = dataset_dict
    shards = sorted((root / "water").glob("*.arrow"))
    source = open_source(shards[1:])
    got = list(source.records)
    assert [r.origin.label for r in got] == labels[2:]
    assert source.metadata["split"] == "water"


def test_the_hessian_unit_is_checked_against_the_files_frequencies(
    tmp_path, quadratic_path
):
    rec = quadratic_path([6, 1, 1, 1, 1], 1, seed=7)[0]
    to_kcal = conversion_factor("eV/Ang/Ang", "kcal/mol/Ang/Ang")
    rows = [_row(rec, "dsgdb9nsd_000001")]
    rows.append(_row(rec, "dsgdb9nsd_000002"))
    rows[1]["hessian"] = (
        (to_kcal * np.asarray(rec.hessian)).reshape(5, 3, 5, 3).tolist()
    )
    write_split(tmp_path / "vacuum", rows, n_shards=1)
    with pytest.raises(
        ConversionError,
        match=r"structure 1 \(dsgdb9nsd_000002\): the Hessian, read as eV/Ang/Ang, "
        r"gives a largest harmonic wavenumber .* \(ratio 4.7",
    ):
        convert([tmp_path / "vacuum"], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_other_layouts_are_refused(tmp_path, dataset_dict):
    root, _, _ = dataset_dict
    with pytest.raises(ConversionError, match="holds the splits .*vacuum.*one split"):
        convert([root], tmp_path / "all.h5")
    with pytest.raises(ConversionError, match="from the splits \\['thf', 'vacuum'\\]"):
        convert([root / "vacuum", root / "thf"], tmp_path / "mixed.h5")
    bad = tmp_path / "other" / "data-00000-of-00001.arrow"
    bad.parent.mkdir()
    table = pa.Table.from_pylist([{"pos": [[0.0, 0.0, 0.0]], "z": [1]}])
    with pa.ipc.new_stream(str(bad), table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(
        ConversionError, match=r"data-00000-of-00001.arrow: not a Hessian QM9 shard"
    ):
        convert([bad], tmp_path / "o.h5")
    garbage = tmp_path / "junk.arrow"
    garbage.write_bytes(b"not arrow at all")
    with pytest.raises(ConversionError, match="junk.arrow: not an Arrow IPC stream"):
        convert([garbage], tmp_path / "o.h5")
    row = _row(dataset_dict[1][0], "dsgdb9nsd_000009")
    row["hessian"] = np.zeros((9, 9)).tolist()
    write_split(tmp_path / "thf", [row], n_shards=1)
    with pytest.raises(
        ConversionError,
        match=r"structure 0 \(dsgdb9nsd_000009\): hessian has shape \(9, 9\), "
        r"expected \(3, 3, 3, 3\)",
    ):
        convert([tmp_path / "thf"], tmp_path / "o.h5")
