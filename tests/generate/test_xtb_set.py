"""The shipped GFN2-xTB bulk set: what issue 11 asks of it, and a data card whose
numbers are the file's.

Reads the file once (about 7,000 structures; ~20 s): the card's tables must equal
``spkhess-generate card`` on the file, every reaction is complete (one reactant,
product and TS, >= 10 IRC points, >= 12 normal-mode samples), every TS has exactly
one imaginary mode and lies above both minima and its IRC points, every edit type
is represented, and the file passes ``spkhess-convert --check``.

These checks are the slow set's (``pytest -m slow``): the default suite pins the file
by its SHA-256 in ``datasets/SHA256SUMS`` (tests/test_shipped_data.py), so a file
that changed fails there and must pass these again before its new digest is written.
"""

import re
from collections import Counter, defaultdict

import numpy as np
import pytest

from schnetpack_hessian import data, properties
from schnetpack_hessian.convert import check
from schnetpack_hessian.datasets import DATASET_DIR, reactive_set_path
from schnetpack_hessian.generate.card import (
    CARD_BEGIN,
    CARD_END,
    card_text,
    set_statistics,
)
from schnetpack_hessian.generate.enumerate import EDITS

pytestmark = pytest.mark.slow

CARD = DATASET_DIR / "reactive_chon_xtb.md"


@pytest.fixture(scope="module")
def xtb_set():
    path = reactive_set_path("xtb")
    return path, set_statistics(path), list(data.iread(path))


def test_card_tables_are_the_files(xtb_set):
    path, stats, _ = xtb_set
    text = CARD.read_text()
    shipped = text[text.index(CARD_BEGIN) + len(CARD_BEGIN) : text.index(CARD_END)]
    assert shipped.strip() == card_text(path, stats=stats).strip()


def test_size_level_and_units(xtb_set):
    path, stats, structures = xtb_set
    assert stats.size_mb <= 30.0
    meta = data.file_metadata(path)
    assert meta["level_of_theory"]["method"] == "GFN2-xTB"
    assert re.fullmatch(
        r"tblite \d+\.\d+.*", meta["level_of_theory"]["program_version"]
    )
    assert data.file_units(path)[properties.hessian] in ("eV/Ang/Ang", "eV/Ang^2")
    assert {s for a in structures for s in a.get_chemical_symbols()} <= set("HCNO")


def test_at_least_300_complete_reactions_of_every_edit_type(xtb_set):
    _, stats, structures = xtb_set
    assert stats.n_reactions >= 300
    assert all(stats.accepted[e] > 0 for e in EDITS), stats.accepted
    assert 3 <= min(stats.n_atoms) and max(stats.n_atoms) <= 14
    kinds = defaultdict(Counter)
    for atoms in structures:
        kinds[atoms.info[properties.reaction]][atoms.info[properties.kind]] += 1
    assert len(kinds) == stats.n_reactions
    for rid, c in kinds.items():
        assert c["reactant"] == c["product"] == c["ts"] == 1, rid
        assert c["irc"] >= 10 and c["nms"] >= 12, rid


def test_transition_states_are_first_order_saddles_above_their_path(xtb_set):
    _, stats, structures = xtb_set
    assert stats.n_imaginary["ts"] == Counter({1: stats.n_reactions})
    for kind in ("reactant", "product"):
        assert stats.n_imaginary[kind] == Counter({0: stats.n_reactions})
    assert min(min(b) for b in stats.barriers) > 0.0
    ts_energy = {
        a.info[properties.reaction]: a.get_potential_energy()
        for a in structures
        if a.info[properties.kind] == "ts"
    }
    irc = np.array(
        [
            ts_energy[a.info[properties.reaction]] - a.get_potential_energy()
            for a in structures
            if a.info[properties.kind] == "irc"
        ]
    )
    assert irc.min() > 0.0


def test_rejections_are_recorded_with_reasons(xtb_set):
    path, stats, _ = xtb_set
    reactions = data.file_metadata(path)["reactions"]
    rejected = [r for r in reactions.values() if r["status"] == "rejected"]
    assert len(rejected) == sum(stats.rejections.values()) > 0
    assert all(r["reason"] for r in rejected)


def test_the_file_passes_the_check(xtb_set):
    path, _, structures = xtb_set
    report = check([path])
    assert report["structures"] == report["hessians"] == len(structures)
