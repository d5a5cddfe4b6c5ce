"""Training files as conversion input: several inputs keep apart their reactions,
with their names, and structures given twice are reported."""

import logging

import numpy as np
import pytest

from schnetpack_hessian import properties as P
from schnetpack_hessian.convert import check, convert
from schnetpack_hessian.data import file_metadata, iread, write
from schnetpack_hessian.data.testing import make_atoms


def _named_file(path, seed, names):
    atoms = make_atoms(n_structures=6, seed=seed, n_reactions=len(names))
    write(path, atoms, metadata={"reactions": list(names)})
    return atoms


@pytest.mark.parametrize("suffix", ["h5", "db"])
def test_two_inputs_keep_reactions_apart_with_names(tmp_path, suffix):
    a = _named_file(tmp_path / f"a.{suffix}", 0, ["keto_enol_1", "diels_alder_2"])
    b = _named_file(tmp_path / f"b.{suffix}", 1, ["hcn_hnc", "ch2o_h2co"])
    out = tmp_path / "both.h5"
    fmt = "training" if suffix == "h5" else "spkdb"
    convert([tmp_path / f"a.{suffix}", tmp_path / f"b.{suffix}"], out, fmt)
    got = list(iread(out))
    assert len(got) == len(a) + len(b)
    names_a = ["keto_enol_1", "diels_alder_2"]
    names_b = ["hcn_hnc", "ch2o_h2co"]
    expected = [names_a[x.info[P.reaction]] for x in a]
    expected += [names_b[x.info[P.reaction]] for x in b]
    assert [g.info[P.reaction_name] for g in got] == expected
    ids_a = {g.info[P.reaction] for g in got[: len(a)]}
    ids_b = {g.info[P.reaction] for g in got[len(a) :]}
    assert not ids_a & ids_b
    assert file_metadata(out)["inputs"] == [
        str(tmp_path / f"a.{suffix}"),
        str(tmp_path / f"b.{suffix}"),
    ]


def test_disjoint_ids_are_kept(tmp_path):
    """Shards of one reaction list (disjoint ids) keep their ids."""
    first = make_atoms(n_structures=4, seed=0, n_reactions=2)
    second = make_atoms(n_structures=4, seed=1, n_reactions=2)
    for x in second:
        x.info[P.reaction] += 2
    write(tmp_path / "s0.h5", first)
    write(tmp_path / "s1.h5", second)
    convert([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "out.h5")
    got = [x.info[P.reaction] for x in iread(tmp_path / "out.h5")]
    assert got == [x.info[P.reaction] for x in first + second]


def test_the_same_input_twice_is_reported(tmp_path, caplog):
    write(tmp_path / "a.h5", make_atoms(n_structures=5, seed=0))
    with caplog.at_level(logging.WARNING):
        report = convert([tmp_path / "a.h5", tmp_path / "a.h5"], tmp_path / "out.h5")
    assert report.duplicates == 5
    assert "5 structure(s) repeat an earlier one" in caplog.text
    assert "a.h5: structure 0 repeats" in caplog.text
    assert check([tmp_path / "a.h5"])["duplicates"] == 0
