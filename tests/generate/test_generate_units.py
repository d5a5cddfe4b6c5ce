"""Unit tests of the generator's pieces: reaction lists, shards, geometry
helpers, checkpoints and normal-mode sampling (no quantum chemistry)."""

import io

import numpy as np
import pytest
from ase import Atoms, units

from schnetpack_hessian import data, vibrations
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.generate.geometry import (
    bond_graph,
    has_clash,
    n_fragments,
    rmsd,
)
from schnetpack_hessian.generate.pathsearch import connects
from schnetpack_hessian.generate.reactions import (
    ReactionError,
    load_reactions,
    parse_shard,
    select_shard,
)
from schnetpack_hessian.generate.sampling import evenly_spaced, normal_mode_samples
from schnetpack_hessian.generate.store import (
    load_structure,
    save_structure,
    write_json,
)
from schnetpack_hessian.generate.workflow import assemble, iter_structures

NH3_UP = np.array(
    [[0, 0, 0], [0.94, 0, 0.38], [-0.47, 0.8141, 0.38], [-0.47, -0.8141, 0.38]]
)
NH3_DOWN = NH3_UP * [1, 1, -1]


def test_reaction_list_parses_xyz_and_ts_guess(reaction_entries):
    text = "reactions:\n" + reaction_entries["hcn"] + reaction_entries["nh3"]
    rs = load_reactions(io.StringIO(text))
    assert [r.id for r in rs] == [3, 7]  # sorted by id
    hcn = rs[1]
    assert hcn.reactant.get_chemical_symbols() == ["C", "N", "H"]
    assert hcn.ts_guess is not None and rs[0].ts_guess is None
    assert hcn.tag == "r0007" and hcn.charge == 0 and hcn.multiplicity == 1
    np.testing.assert_allclose(hcn.product.positions[2], [0, 0, 2.165])


def test_reaction_list_errors_name_the_reaction(reaction_entries):
    HCN_HNC = reaction_entries["hcn"]
    bad = HCN_HNC.replace("H 0.0 0.0 2.165", "O 0.0 0.0 2.165")
    with pytest.raises(ReactionError, match=r"reaction 7 \(HCN -> HNC\).*differ"):
        load_reactions(io.StringIO("reactions:\n" + bad))
    with pytest.raises(ReactionError, match="duplicate id 7"):
        load_reactions(io.StringIO("reactions:\n" + HCN_HNC + HCN_HNC))
    with pytest.raises(ReactionError, match="missing 'product'"):
        load_reactions(io.StringIO("reactions:\n  - id: 1\n    reactant: 'H 0 0 0'\n"))


def test_smiles_are_embedded_in_map_order():
    pytest.importorskip("rdkit")
    text = """reactions:
  - id: 0
    name: formaldehyde -> hydroxycarbene
    reactant: {smiles: "[H:3][C:1](=[O:2])[H:4]"}
    product: {smiles: "[H:3][C:1][O:2][H:4]"}
"""
    (r,) = load_reactions(io.StringIO(text))
    assert r.reactant.get_chemical_symbols() == ["C", "O", "H", "H"]
    assert r.product.get_chemical_symbols() == ["C", "O", "H", "H"]
    g = bond_graph(r.product.numbers, r.product.positions)
    assert g[1, 3] and not g[0, 3]  # H4 on the oxygen in the product


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_list(count):
    items = list(range(10))
    shards = [select_shard(items, i, count) for i in range(count)]
    assert sorted(sum(shards, [])) == items
    assert parse_shard(f"{count - 1}/{count}") == (count - 1, count)
    with pytest.raises(ReactionError):
        parse_shard(f"{count}/{count}")


def test_rmsd_separates_mirror_images_and_graphs_see_bonds():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q if np.linalg.det(q) > 0 else -q
    assert rmsd(NH3_UP @ rot.T + 3.0, NH3_UP) == pytest.approx(0, abs=1e-10)
    assert rmsd(NH3_DOWN, NH3_UP) > 0.3  # enantiomer-like, not superimposable
    g = bond_graph([7, 1, 1, 1], NH3_UP)
    assert g.sum() == 6 and n_fragments(g) == 1
    apart = NH3_UP.copy()
    apart[1] += [5, 0, 0]
    assert n_fragments(bond_graph([7, 1, 1, 1], apart)) == 2
    assert has_clash([7, 1], [[0, 0, 0], [0.2, 0, 0]])
    assert not has_clash([7, 1], [[0, 0, 0], [1.0, 0, 0]])


def test_connects_orients_and_rejects():
    z = np.array([7, 1, 1, 1])
    near_up = NH3_UP + 0.01
    assert connects(z, near_up, NH3_DOWN, NH3_UP, NH3_DOWN) == 1
    assert connects(z, NH3_DOWN, near_up, NH3_UP, NH3_DOWN) == -1
    # both ends in the same basin: not a path between reactant and product
    assert connects(z, NH3_UP, near_up, NH3_UP, NH3_DOWN) == 0
    # a broken bond at an end does not match
    broken = NH3_DOWN.copy()
    broken[1] *= 3
    assert connects(z, NH3_UP, broken, NH3_UP, NH3_DOWN) == 0


def test_structure_checkpoint_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    h = rng.normal(size=(12, 12))
    s = HessianRecord(
        np.array([7, 1, 1, 1]),
        NH3_UP,
        -1500.5,
        rng.normal(size=(4, 3)),
        h + h.T,
        "irc",
        4,
    )
    save_structure(tmp_path / "x.npz", s)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]  # no temporary left
    back = load_structure(tmp_path / "x.npz")
    assert back.kind == "irc" and back.reaction == 4 and back.energy == s.energy
    np.testing.assert_array_equal(back.hessian, s.hessian)
    assert str(back.origin).startswith(str(tmp_path / "x.npz"))
    atoms = back.as_atoms()  # the bare geometry an optimiser starts from
    assert atoms.calc is None and not atoms.info
    np.testing.assert_array_equal(atoms.positions, NH3_UP)
    assert load_structure(tmp_path / "missing.npz") is None
    s.forces = s.hessian = None  # missing targets are stored all NaN
    save_structure(tmp_path / "y.npz", s)
    back = load_structure(tmp_path / "y.npz")
    assert back.forces is None and back.hessian is None and back.energy == s.energy


def _old_checkpoint(path, positions, kind, reaction, rng):
    """A checkpoint as the generator's former ``Structure`` wrote it: plain arrays,
    energy a float64 scalar, kind a numpy string."""
    h = rng.normal(size=(12, 12))
    np.savez(
        path,
        numbers=np.array([7, 1, 1, 1], dtype=np.int64),
        positions=np.asarray(positions, dtype=np.float64),
        energy=np.float64(-1500.5),
        forces=rng.normal(size=(4, 3)),
        hessian=h + 0.1 * h.T,  # the program's raw, not quite symmetric Hessian
        kind=np.str_(kind),
        reaction=np.int64(reaction),
    )


def test_work_directory_of_the_former_checkpoint_format_assembles(tmp_path):
    rng = np.random.default_rng(1)
    rdir = tmp_path / "work" / "r0005"
    rdir.mkdir(parents=True)
    for kind, x in (("reactant", NH3_UP), ("product", NH3_DOWN), ("ts", NH3_UP)):
        _old_checkpoint(rdir / f"{kind}.npz", x, kind, 5, rng)
    _old_checkpoint(rdir / "irc_000.npz", NH3_UP * 1.01, "irc", 5, rng)
    write_json(rdir / "done.json", {"reaction": 5, "name": "inversion"})

    records = list(iter_structures([tmp_path / "work"]))
    assert [r.kind for r in records] == ["reactant", "product", "ts", "irc"]
    ts = records[2]
    with np.load(rdir / "ts.npz") as old:
        np.testing.assert_array_equal(ts.positions, old["positions"])
        np.testing.assert_array_equal(ts.forces, old["forces"])
        raw = old["hessian"]
    np.testing.assert_allclose(ts.hessian, (raw + raw.T) / 2)
    assert ts.energy == -1500.5 and ts.reaction == 5

    out = tmp_path / "set.h5"
    assert assemble([tmp_path / "work"], out) == 4
    atoms = list(data.iread(out))
    assert [a.info["kind"] for a in atoms] == [r.kind for r in records]
    np.testing.assert_allclose(atoms[2].info["hessian"], ts.hessian)
    assert atoms[2].get_potential_energy() == -1500.5


def test_evenly_spaced():
    assert evenly_spaced(10, 3) == [0, 4, 9]  # round(4.5) = 4 (banker's rounding)
    assert evenly_spaced(3, 5) == [0, 1, 2]
    assert evenly_spaced(5, 1) == [2]
    assert evenly_spaced(0, 3) == []


def test_normal_mode_sampling_energy_bound_and_seed(nh3_springs):
    """ANI sampling adds at most (3/2) N k_B T of harmonic energy, moves only
    along vibrations, and is reproducible from its seed."""
    atoms, h = nh3_springs
    m = atoms.get_masses()
    t = 500.0
    kw = dict(
        numbers=atoms.numbers,
        positions=atoms.positions,
        masses=m,
        hessian=h,
        n_samples=200,
        temperature=t,
    )
    xs = normal_mode_samples(**kw, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(
        xs, normal_mode_samples(**kw, rng=np.random.default_rng(5))
    )
    dx = (xs - atoms.positions).reshape(len(xs), -1)
    e_harm = 0.5 * np.einsum("si,ij,sj->s", dx, h, dx)
    assert e_harm.max() <= 1.5 * len(atoms) * units.kB * t * (1 + 1e-9)
    assert e_harm.mean() > 0.1 * units.kB * t
    basis = vibrations.rigid_body_basis(atoms.positions, m)
    mw = dx * np.sqrt(np.repeat(m, 3))
    np.testing.assert_allclose(mw @ basis, 0, atol=1e-10)


def test_bond_graph_keeps_xtb_h2_bonded():
    """GFN2-xTB's H2 (0.777 Å) is one molecule, geminal hydrogens (1.78 Å) are not
    bonded; the end-point bond check relies on both."""
    assert bond_graph([1, 1], [[0, 0, 0], [0, 0, 0.777]])[0, 1]
    ch2 = [[0, 0, 0], [0.89, 0.0, 0.63], [-0.89, 0.0, 0.63]]
    g = bond_graph([6, 1, 1], ch2)
    assert g[0, 1] and g[0, 2] and not g[1, 2]


def _carbon_square(diagonal: float) -> np.ndarray:
    side = diagonal / np.sqrt(2.0)
    return np.array([[0, 0, 0], [side, 0, 0], [side, side, 0], [0, side, 0]], float)


def test_bond_changes_ignore_a_distance_that_only_crosses_the_threshold():
    """Cyclobutene's 1,3 cross-ring distance (2.05 Å from the embedding, 1.97 Å
    after optimisation) crosses 1.3·(r_C + r_C) = 1.98 Å without any bond forming;
    a pair that comes within bonding distance, or one pulled apart, does count."""
    from schnetpack_hessian.generate.geometry import bond_changes

    start, relaxed = _carbon_square(2.05), _carbon_square(1.97)
    assert not bond_graph([6] * 4, start)[0, 2] and bond_graph([6] * 4, relaxed)[0, 2]
    assert bond_changes([6] * 4, start, relaxed) == ([], [])
    closed = relaxed.copy()
    closed[2] = [0.9, 0.9, 0.0]  # 1.27 Å from atom 0: a new C-C bond
    formed, broken = bond_changes([6] * 4, start, closed)
    assert (0, 2) in formed and broken == []
    pulled = start.copy()
    pulled[1] = [2.5, 0.0, 0.0]  # 0-1 bond stretched to 2.5 Å > 1.5·1.52 Å
    formed, broken = bond_changes([6] * 4, start, pulled)
    assert formed == [] and (0, 1) in broken


def test_require_counts_turns_short_reactions_into_rejections():
    from schnetpack_hessian.generate.workflow import ReactionOutcome, require_counts

    full = {"reactant": 1, "product": 1, "ts": 1, "irc": 10, "nms": 12}
    outcomes = [
        ReactionOutcome(0, "long", "done", dict(full)),
        ReactionOutcome(1, "short", "done", dict(full, irc=2, nms=8)),
        ReactionOutcome(2, "bad", "rejected", reason="TS: 2 imaginary modes"),
    ]
    kept = require_counts(outcomes, {"irc": 10, "nms": 12})
    assert kept[0] == outcomes[0] and kept[2] == outcomes[2]
    assert kept[1].status == "rejected" and kept[1].counts == outcomes[1].counts
    assert kept[1].reason == (
        "too few points: 2 irc structures < 10, 8 nms structures < 12"
    )
    assert outcomes[1].status == "done"  # the input is not changed
    assert require_counts(outcomes, {"irc": 0, "nms": 0}) == outcomes


def test_sella_failure_is_a_rejection(monkeypatch):
    """Sella's RuntimeError rejects the reaction (PathError, not retried), while an
    engine's QCError passes through unchanged."""
    sella = pytest.importorskip("sella")
    from schnetpack_hessian.generate.calculators import Engine, MethodSpec, QCError
    from schnetpack_hessian.generate.pathsearch import PathError, find_ts

    def fail(*args, **kwargs):
        raise RuntimeError("Geometry update ODE is taking too long to converge!")

    monkeypatch.setattr(sella.Sella, "run", fail)
    engine = Engine(MethodSpec.xtb())
    atoms = Atoms("NHHH", positions=NH3_UP)
    with pytest.raises(PathError, match="TS: Sella failed: Geometry update ODE"):
        find_ts(atoms, engine, label="TS")

    def qc_fail(*args, **kwargs):
        raise QCError("SCF not converged")

    monkeypatch.setattr(sella.Sella, "run", qc_fail)
    with pytest.raises(QCError):
        find_ts(atoms, engine, label="TS")


def test_rejected_table_and_categories_name_every_missing_reaction(tmp_path):
    from schnetpack_hessian import data
    from schnetpack_hessian.data.testing import make_atoms
    from schnetpack_hessian.generate.card import (
        edit_of,
        rejected_table,
        rejection_category,
    )

    reactions = {
        "0": {"name": "torsion: OO >> OO", "status": "done", "reason": ""},
        "4": {
            "name": "H2CO -> H2 + CO",
            "status": "rejected",
            "reason": "TS: 2 modes | x",
        },
    }
    path = tmp_path / "set.h5"
    data.write(path, make_atoms(3, n_reactions=1), metadata={"reactions": reactions})
    table = rejected_table(path)
    assert "| 4 | H2CO -> H2 + CO | TS: 2 modes / x |" in table
    assert "torsion" not in table
    assert edit_of("torsion: OO >> OO") == "torsion"
    assert edit_of("H2CO -> H2 + CO") == edit_of("weird: name") == "hand-written"
    reason = "reaction 3 (x) IRC: the IRC does not connect reactant and product"
    assert rejection_category(reason).startswith("IRC does not connect")
    assert rejection_category("something new") == "other: something new"
