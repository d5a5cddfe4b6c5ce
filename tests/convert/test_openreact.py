"""OpenREACT-CHON-EFH: three files → one training file with kind/reaction labels."""

import h5py
import numpy as np
import pytest

from schnetpack_hessian.convert import ConversionError, convert, open_source
from schnetpack_hessian.data import file_metadata, file_units, read_records
from schnetpack_hessian.data.testing import internal_projector


def _critical(quadratic_path, numbers, seed, reaction):
    """Reactant (minimum), TS (one negative eigenvalue), product, with F = 0 and
    Hessians without rigid-motion components (so the sum rules hold)."""
    rng = np.random.default_rng(seed)
    n = len(numbers)
    recs = []
    for kind, n_neg in (("reactant", 0), ("ts", 1), ("product", 0)):
        rec = quadratic_path(numbers, 1, seed=seed)[0]
        u, s, _ = np.linalg.svd(internal_projector(rec.positions))
        q = u[:, s > 0.5]  # orthonormal internal directions (3N - 6)
        eig = rng.uniform(0.2, 2.0, size=q.shape[1])
        eig[:n_neg] *= -1
        h = (q * eig) @ q.T
        recs.append(rec)
        recs[-1].hessian = 0.5 * (h + h.T)
        recs[-1].forces = np.zeros((n, 3))
        recs[-1].kind = kind
    return recs


@pytest.fixture
def openreact_files(tmp_path, quadratic_path, write_openreact):
    mols = {"/rxn000": [6, 1, 1, 8], "/rxn001": [7, 1, 1]}
    rtp = {
        k: _critical(quadratic_path, z, i, i) for i, (k, z) in enumerate(mols.items())
    }
    irc = {
        k: quadratic_path(z, 5, seed=10 + i) for i, (k, z) in enumerate(mols.items())
    }
    nms = {
        k: quadratic_path(z, 4, seed=20 + i, step=0.01, kind="nms")
        for i, (k, z) in enumerate(mols.items())
    }
    paths = [tmp_path / f"molecules-{s}.h5" for s in ("RTP", "IRC", "NMS")]
    write_openreact(paths[0], rtp, width=6, gradient=True)
    write_openreact(paths[1], irc, width=6, gradient=True)
    write_openreact(paths[2], nms, width=4, gradient=True)
    return paths, {"rtp": rtp, "irc": irc, "nms": nms}


@pytest.mark.parametrize("suffix", ["h5", "db"])
def test_roundtrip_exact_with_labels(tmp_path, openreact_files, suffix):
    paths, data = openreact_files
    out = tmp_path / f"openreact.{suffix}"
    report = convert(paths, out)
    assert report.n_structures == 6 + 10 + 8 and report.n_hessians == 24
    assert file_units(out) == {
        "distance": "Ang",
        "energy": "Hartree",
        "forces": "Hartree/Ang",
        "hessian": "Hartree/Ang/Ang",
    }
    md = file_metadata(out)
    assert md["source"] == "OpenREACT-CHON-EFH"
    assert md["reactions"] == ["/rxn000", "/rxn001"]
    assert md["forces_convention"].startswith("gradient (dE/dR) in source, negated")
    expected = [r for s in ("rtp", "irc", "nms") for g in data[s].values() for r in g]
    got = list(read_records(out))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g.numbers, e.numbers)
        np.testing.assert_array_equal(g.positions, e.positions)
        assert g.energy == e.energy
        np.testing.assert_array_equal(g.forces, e.forces)  # sign restored
        np.testing.assert_array_equal(g.hessian, e.hessian)
        assert g.kind == e.kind
    assert [g.reaction for g in got[:6]] == [0, 0, 0, 1, 1, 1]


def test_forces_sign_declared_and_ambiguous(tmp_path, openreact_files):
    paths, data = openreact_files
    src = open_source(paths[1:2], "openreact", forces_sign="forces")
    first = next(src.records)
    np.testing.assert_array_equal(first.forces, -data["irc"]["/rxn000"][0].forces)
    # critical points only: no neighbours, so the documented assumption is used
    src = open_source(paths[:1], "openreact")
    assert "assumed" in src.metadata["forces_convention"]


def test_kind_from_group_names(tmp_path, quadratic_path, write_openreact):
    recs = quadratic_path([1, 1], 2, seed=1)
    path = tmp_path / "molecules-RTP.h5"
    write_openreact(path, {"/r7/product": recs[:1], "/r7/ts": recs[1:]})
    kinds = [r.kind for r in open_source([path], "openreact").records]
    assert kinds == ["product", "ts"]


def test_bad_inputs(tmp_path, openreact_files, quadratic_path, write_openreact):
    paths, _ = openreact_files
    other = tmp_path / "something.h5"
    write_openreact(other, {"/a": quadratic_path([1, 1], 2)})
    with pytest.raises(ConversionError, match="cannot tell whether it holds"):
        open_source([other], "openreact")
    with pytest.raises(ConversionError, match="store energy in Hartree"):
        open_source(paths, "openreact", energy_unit="eV")
    with h5py.File(other, "a") as f:
        f["/a/species"][0] = b"Q"
    with pytest.raises(ConversionError, match="unknown element 'Q'"):
        list(open_source([other], "openreact", kind="irc").records)


@pytest.mark.parametrize(
    "name, kinds",
    [
        ("birch-RTP.h5", {"reactant", "ts", "product"}),  # "IRC" inside "BIRCH"
        ("molecules-IRC.h5", {"irc"}),
        ("run_nms.h5", {"nms"}),
    ],
)
def test_subset_from_whole_tokens_of_the_name(tmp_path, openreact_files, name, kinds):
    paths, _ = openreact_files
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    source = paths[1] if "IRC" in name else paths[2] if "nms" in name else paths[0]
    target = renamed / name
    target.write_bytes(source.read_bytes())
    got = {r.kind for r in open_source([target], "openreact").records}
    assert got == kinds


def test_subset_from_content_or_option(tmp_path, openreact_files):
    paths, _ = openreact_files
    plain = tmp_path / "birch.h5"
    plain.write_bytes(paths[1].read_bytes())
    with pytest.raises(ConversionError, match="birch.h5: cannot tell.*--subset"):
        open_source([plain], "openreact")
    kinds = {r.kind for r in open_source([plain], "openreact", subset="IRC").records}
    assert kinds == {"irc"}
    with h5py.File(plain, "a") as f:
        f.attrs["subset"] = "NMS"
    assert {r.kind for r in open_source([plain], "openreact").records} == {"nms"}
    with pytest.raises(ConversionError, match="file says subset NMS, the option"):
        open_source([plain], "openreact", subset="IRC")
    both = tmp_path / "RTP-IRC.h5"
    both.write_bytes(paths[1].read_bytes())
    with pytest.raises(ConversionError, match="holds the subsets"):
        open_source([both], "openreact")
