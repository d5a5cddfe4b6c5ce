"""Reaction enumeration: expected edit products with the atom mapping kept, valid
valences, no duplicates, determinism, bad input lines reported and skipped."""

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402

from schnetpack_hessian.generate.enumerate import (  # noqa: E402
    EnumerationError,
    enumerate_reactions,
    reaction_list_yaml,
    select_per_edit,
    read_molecules,
    shipped_molecules_path,
    write_reaction_list,
)
from schnetpack_hessian.generate.geometry import bond_graph, n_fragments  # noqa: E402
from schnetpack_hessian.generate.reactions import load_reactions  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HANDFUL = ["C#N hydrogen cyanide", "NC=O formamide", "C=O formaldehyde", "CCO", "N"]


@pytest.fixture(scope="module")
def handful():
    mols, problems = read_molecules(HANDFUL)
    assert not problems
    return enumerate_reactions(mols, seed=3)


def plain(mapped):
    mol = Chem.MolFromSmiles(mapped)
    for a in mol.GetAtoms():
        a.SetAtomMapNum(0)
    return Chem.MolToSmiles(Chem.RemoveHs(mol))


def find(reactions, edit, reactant, product):
    hits = [
        r
        for r in reactions
        if r.edit == edit
        and plain(r.reactant_smiles) == reactant
        and plain(r.product_smiles) == product
    ]
    assert len(hits) == 1, [r.name for r in reactions if r.edit == edit]
    return hits[0]


def numbers(r):
    return np.array([Chem.Atom(s).GetAtomicNum() for s in r.symbols])


def smiles_graph(mapped):
    """Adjacency of a mapped SMILES in map order (atom i has map i + 1)."""
    mol = Chem.MolFromSmiles(mapped, sanitize=False)
    order = {a.GetIdx(): a.GetAtomMapNum() - 1 for a in mol.GetAtoms()}
    adj = np.zeros((mol.GetNumAtoms(),) * 2, dtype=bool)
    for b in mol.GetBonds():
        i, j = order[b.GetBeginAtomIdx()], order[b.GetEndAtomIdx()]
        adj[i, j] = adj[j, i] = True
    return adj


def test_hcn_to_hnc_moves_the_same_hydrogen(handful):
    r = find(handful, "h_shift_12", "C#N", "[C-]#[NH+]")
    assert r.symbols == ("C", "N", "H")
    g_r = bond_graph(numbers(r), r.reactant_positions)
    g_p = bond_graph(numbers(r), r.product_positions)
    assert g_r[2, 0] and not g_r[2, 1]  # H on C
    assert g_p[2, 1] and not g_p[2, 0]  # the same H on N
    assert "[H:3]" in r.product_smiles and "[NH+:2]" not in r.product_smiles
    np.testing.assert_array_equal(smiles_graph(r.product_smiles), g_p)


def test_formamide_to_formimidic_acid(handful):
    r = find(handful, "h_shift_13", "NC=O", "N=CO")
    g_r = bond_graph(numbers(r), r.reactant_positions)
    g_p = bond_graph(numbers(r), r.product_positions)
    n, o = r.symbols.index("N"), r.symbols.index("O")
    hs = [i for i, s in enumerate(r.symbols) if s == "H"]
    moved = [h for h in hs if g_r[h, n] and g_p[h, o]]
    assert len(moved) == 1  # one hydrogen went from N to O, keeping its index
    np.testing.assert_array_equal(smiles_graph(r.reactant_smiles), g_r)
    np.testing.assert_array_equal(smiles_graph(r.product_smiles), g_p)


def test_formaldehyde_to_h2_and_co(handful):
    r = find(handful, "elimination_11", "C=O", "[C-]#[O+].[H][H]")
    g_p = bond_graph(numbers(r), r.product_positions)
    h = [i for i, s in enumerate(r.symbols) if s == "H"]
    assert g_p[h[0], h[1]] and n_fragments(g_p) == 2
    c = r.symbols.index("C")
    assert not g_p[c, h].any()  # both hydrogens left the carbon
    np.testing.assert_array_equal(smiles_graph(r.product_smiles), g_p)


def test_products_are_valid_and_unique(handful):
    keys = [r.key for r in handful]
    assert len(keys) == len(set(keys))
    pairs = {
        (plain(r.reactant_smiles), plain(r.product_smiles), r.edit) for r in handful
    }
    edits = {r.edit for r in handful}
    assert {"h_shift_12", "h_shift_13", "torsion", "inversion"} <= edits
    assert {"elimination_11", "elimination_12", "addition_12"} <= edits
    for r in handful:
        for smi in (r.reactant_smiles, r.product_smiles):
            mol = Chem.MolFromSmiles(smi)  # sanitises: valences are valid
            assert mol is not None, smi
            assert Chem.GetFormalCharge(mol) == 0
            assert not any(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
        if r.edit not in ("torsion", "inversion"):
            assert r.reactant_smiles != r.product_smiles
            np.testing.assert_array_equal(
                smiles_graph(r.product_smiles),
                bond_graph(numbers(r), r.product_positions),
                err_msg=r.name,
            )
    assert len(pairs) <= len(handful)


def test_equivalent_and_reverse_reactions_are_listed_once():
    """HCN's hydrogen shift from either end of the pair, listed twice, is one
    reaction; so are the two symmetric hydrogens of formaldehyde."""
    mols, _ = read_molecules(["C#N", "[C-]#[NH+]", "C#N", "C=O"])
    rs = enumerate_reactions(mols, edits=["h_shift_12", "elimination_11"])
    names = [(r.edit, plain(r.reactant_smiles), plain(r.product_smiles)) for r in rs]
    assert names.count(("h_shift_12", "C#N", "[C-]#[NH+]")) == 1
    assert not any(n[1] == "[C-]#[NH+]" and n[2] == "C#N" for n in names)
    assert names.count(("h_shift_12", "C=O", "[CH-]=[OH+]")) == 1
    assert names.count(("elimination_11", "C=O", "[C-]#[O+].[H][H]")) == 1


def test_torsion_and_inversion_keep_the_graph(handful):
    tors = [
        r for r in handful if r.edit == "torsion" and plain(r.reactant_smiles) == "CCO"
    ]
    inv = [r for r in handful if r.edit == "inversion"]
    assert len(tors) == 2 and len(inv) == 1  # C–C and C–O of ethanol; NH3
    for r in tors + inv:
        z = numbers(r)
        np.testing.assert_array_equal(
            bond_graph(z, r.reactant_positions), bond_graph(z, r.product_positions)
        )
        assert np.sqrt(np.mean((r.reactant_positions - r.product_positions) ** 2)) > 0.1


def test_ring_opening_and_closing_are_one_reaction():
    ring, _ = read_molecules(["C1=CCC1 cyclobutene"])
    chain, _ = read_molecules(["C=CC=C butadiene"])
    (opened,) = enumerate_reactions(ring, edits=["ring_opening"])
    assert plain(opened.product_smiles) == "C=CC=C"
    closed = [
        r
        for r in enumerate_reactions(chain, edits=["ring_closing"])
        if plain(r.product_smiles) == "C1=CCC1"
    ]
    assert len(closed) == 1 and closed[0].key == opened.key
    both = enumerate_reactions(ring + chain, edits=["ring_opening", "ring_closing"])
    assert [r.key for r in both].count(opened.key) == 1
    z = numbers(opened)
    assert (
        not bond_graph(z, opened.reactant_positions).sum()
        == bond_graph(z, opened.product_positions).sum()
    )


def test_deterministic_for_a_seed():
    mols, _ = read_molecules(HANDFUL)
    a = reaction_list_yaml(enumerate_reactions(mols, seed=7))
    b = reaction_list_yaml(enumerate_reactions(mols, seed=7))
    c = reaction_list_yaml(enumerate_reactions(mols, seed=8))
    assert a == b
    assert a != c  # the geometries depend on the seed


def test_bad_lines_are_reported_and_skipped(caplog):
    lines = [
        "# a comment",
        "C#N good",
        "",
        "C1CC not-a-smiles",
        "[CH3] methyl radical",
        "CCl chloromethane",
        "[NH4+] ammonium",
        "C.O two molecules",
        "CCCCCCCCO too big",
        "O water",
    ]
    mols, problems = read_molecules(lines)
    assert [m.smiles for m in mols] == ["C#N", "O"]
    assert [m.line for m in mols] == [2, 10]
    got = {p.line: p.reason for p in problems}
    assert sorted(got) == [4, 5, 6, 7, 8, 9]
    assert "invalid SMILES" in got[4]
    assert "radical" in got[5]
    assert "Cl" in got[6] and "unsupported" in got[6]
    assert "charge" in got[7]
    assert "fragments" in got[8]
    assert "heavy atoms" in got[9]
    assert "line 5" in caplog.text
    assert enumerate_reactions(mols, edits=["h_shift_12"])  # the run goes on


def test_select_per_edit_is_seeded_and_keeps_order(handful):
    picked = select_per_edit(handful, 2, seed=1)
    assert picked == select_per_edit(handful, 2, seed=1)
    counts = {e: sum(r.edit == e for r in handful) for e in {r.edit for r in handful}}
    for edit, n in counts.items():
        assert sum(r.edit == edit for r in picked) == min(n, 2)
    order = [handful.index(r) for r in picked]
    assert order == sorted(order)
    many = [e for e, n in counts.items() if n > 3]
    assert any(
        [r.key for r in select_per_edit(handful, 2, seed=s) if r.edit in many]
        != [r.key for r in picked if r.edit in many]
        for s in range(2, 6)
    )


def test_unknown_edit_is_named():
    with pytest.raises(EnumerationError, match="'swap'"):
        enumerate_reactions([], edits=["swap"])


def test_reaction_list_loads_in_the_workflow_schema(handful, tmp_path):
    path = write_reaction_list(handful, tmp_path / "r.yaml", first_id=100, header="x")
    assert path.read_text().startswith("# x\n")
    loaded = load_reactions(path)
    assert [r.id for r in loaded] == list(range(100, 100 + len(handful)))
    for r, e in zip(loaded, handful):
        assert tuple(r.reactant.get_chemical_symbols()) == e.symbols
        np.testing.assert_allclose(r.product.positions, e.product_positions, atol=1e-6)
        assert r.name == e.name
    import yaml

    entry = yaml.safe_load(path.read_text())["reactions"][0]
    assert {"edit", "reactant_smiles", "product_smiles", "source"} <= set(entry)


def test_hand_written_list_still_loads():
    reactions = load_reactions(ROOT / "data_scripts" / "reactions_chon.yaml")
    assert len(reactions) >= 10


def test_missing_molecule_list_is_named(monkeypatch, tmp_path):
    import schnetpack_hessian.generate.enumerate as en

    monkeypatch.setattr(en, "__file__", str(tmp_path / "enumerate.py"))
    with pytest.raises(FileNotFoundError, match="--molecules FILE"):
        en.shipped_molecules_path()


def test_shipped_molecule_list_is_clean():
    with open(shipped_molecules_path()) as fh:
        text = fh.read()
    mols, problems = read_molecules(io.StringIO(text))
    assert not problems
    assert 300 <= len(mols) == len({Chem.CanonSmiles(m.smiles) for m in mols})
    assert f"# {len(mols)} molecules" in text
    header = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert any("python data_scripts/make_molecule_list.py" in ln for ln in header)
