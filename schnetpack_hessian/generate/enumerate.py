"""Reaction enumeration: elementary reactions of small closed-shell molecules by
graph edits, with the atom mapping kept (RDKit).

Every molecule is held with explicit hydrogens; atom ``i`` of the reactant is atom
``i`` of the product.  An edit changes the covalent connectivity only; the
product's bond orders and formal charges are then assigned once, by
:func:`lewis_structure` (RDKit's ``DetermineBondOrders``, neutral, closed shell), so
``H–C≡N → C≡N–H`` becomes ``[C-]#[NH+]`` and ``H2C=O → H2 + CO`` gives
``[C-]#[O+]``.  Edits (``EDITS``):

==================  =====================================================================
``h_shift_12``      H moves from a heavy atom to a bonded heavy atom (HCN → HNC)
``h_shift_13``      H moves to a heavy atom two bonds away (keto–enol, amide–imidic acid)
``torsion``         rotamer: +120° about an sp3–sp3 single bond, 180° about other single
                    bonds and C=N / N=N double bonds (E/Z), same graph
``inversion``       pyramidal sp3 N reflected through the plane of its neighbours
``ring_opening``    a ring bond between heavy atoms breaks
``ring_closing``    a bond forms between heavy atoms 2–5 bonds apart (3- to 6-rings)
``elimination_11``  bonds A–X, A–Y break, X–Y forms; a small molecule leaves
``elimination_12``  as above with A–B bonded (A–X, B–Y break)
``addition_11/12``  the reverse: a small molecule (``SMALL_MOLECULES``) adds to a molecule
==================  =====================================================================

A product is kept if it has a neutral closed-shell Lewis structure, every charged
atom is bonded to an oppositely charged atom (``[C-]#[O+]`` yes, separated charges
no), it adds at most one charge pair, and (eliminations) it splits into exactly
one small molecule plus the rest.  Reactions are deduplicated by the canonical
SMILES of their condensed reaction graph (reactant and product bonds of every atom
pair), which is the same for symmetry-equivalent edits and for ``A → B`` and
``B → A``.  Geometries: ETKDG (seeded) for the side with fewer fragments; each
fragment of the other side is embedded, the conformer nearest to the reference
(Kabsch, :func:`~schnetpack_hessian.generate.geometry.kabsch_align`) is kept, and
separate fragments are pushed apart until they no longer clash.

Positions are in Å throughout.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from schnetpack_hessian.generate.geometry import has_clash, kabsch_align, rmsd

__all__ = [
    "EDITS",
    "SMALL_MOLECULES",
    "EnumerationError",
    "InputProblem",
    "InputMolecule",
    "EnumeratedReaction",
    "read_molecules",
    "lewis_structure",
    "reaction_key",
    "enumerate_reactions",
    "listed_keys",
    "select_per_edit",
    "reaction_list_yaml",
    "write_reaction_list",
    "shipped_molecules_path",
]

log = logging.getLogger(__name__)

EDITS: Tuple[str, ...] = (
    "h_shift_12",
    "h_shift_13",
    "torsion",
    "inversion",
    "ring_opening",
    "ring_closing",
    "elimination_11",
    "elimination_12",
    "addition_11",
    "addition_12",
)

#: small molecules that eliminations release and additions add, as SMILES
SMALL_MOLECULES: Dict[str, str] = {
    "H2": "[H][H]",
    "H2O": "O",
    "CO": "[C-]#[O+]",
    "HCN": "C#N",
    "N2": "N#N",
}

#: small molecules whose atoms insert into a bond (the reverse of an extrusion)
INSERTING: Tuple[str, ...] = ("CO", "N2")

#: elements the enumeration accepts (atomic numbers of H, C, N, O)
ELEMENTS: Tuple[int, ...] = (1, 6, 7, 8)

PathLike = Union[str, Path]


class EnumerationError(ValueError):
    """Reaction enumeration cannot proceed (e.g. no usable input molecule)."""


@dataclass(frozen=True)
class InputProblem:
    """A line of a molecule list that was skipped.

    Attributes:
        line: 1-based line number in the input.
        text: the line as read.
        reason: why it was skipped.
    """

    line: int
    text: str
    reason: str


@dataclass(frozen=True)
class InputMolecule:
    """A usable molecule of the input list.

    Attributes:
        line: 1-based line number.
        smiles: the SMILES as given.
        name: the rest of the line (may be empty).
        mol: RDKit molecule with explicit hydrogens, bond orders and charges from
            :func:`lewis_structure`.
    """

    line: int
    smiles: str
    name: str
    mol: object


@dataclass(frozen=True)
class EnumeratedReaction:
    """One enumerated reaction, atom-mapped (atom ``i`` ↔ atom ``i``).

    Attributes:
        edit: edit type (one of :data:`EDITS`).
        reactant_smiles: reactant SMILES, map number ``i + 1`` for atom ``i``.
        product_smiles: product SMILES, same map numbers.
        key: canonical SMILES of the condensed reaction graph (the dedup key).
        symbols: element symbols in atom order.
        reactant_positions: ``(N, 3)`` reactant geometry in Å.
        product_positions: ``(N, 3)`` product geometry in Å, aligned on the reactant.
        source: input line(s) the reaction came from.
    """

    edit: str
    reactant_smiles: str
    product_smiles: str
    key: str
    symbols: Tuple[str, ...]
    reactant_positions: np.ndarray
    product_positions: np.ndarray
    source: str

    @property
    def name(self) -> str:
        """``edit: reactant >> product`` with plain canonical SMILES."""
        return f"{self.edit}: {_plain(self.reactant_smiles)} >> " + _plain(
            self.product_smiles
        )


def _chem():
    try:
        from rdkit import Chem
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reaction enumeration needs RDKit: pip install 'schnetpack-hessian[qc]'"
        ) from err
    return Chem


def _plain(mapped: str) -> str:
    """Canonical SMILES without map numbers and hydrogens of a mapped SMILES."""
    Chem = _chem()
    mol = Chem.MolFromSmiles(mapped)
    for a in mol.GetAtoms():
        a.SetAtomMapNum(0)
    return Chem.MolToSmiles(Chem.RemoveHs(mol))


def shipped_molecules_path() -> Path:
    """Path of the shipped molecule list ``molecules_chon.smi``.

    Raises:
        FileNotFoundError: the list is not in this installation.
    """
    path = Path(__file__).resolve().parent / "molecules_chon.smi"
    if not path.exists():
        raise FileNotFoundError(
            f"the shipped molecule list {path} is missing from this installation; "
            "install from a source checkout (pip install -e .) or pass your own "
            "list (spkhess-generate enumerate --molecules FILE)"
        )
    return path


def _connectivity(mol, broken=(), formed=()):
    """Bare connectivity copy of ``mol`` (single bonds, no charges, no aromatic
    flags) with bonds ``broken`` removed and ``formed`` added (index pairs)."""
    Chem = _chem()
    rw = Chem.RWMol()
    for a in mol.GetAtoms():
        b = Chem.Atom(a.GetAtomicNum())
        b.SetNoImplicit(True)
        rw.AddAtom(b)
    pairs = {
        tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in mol.GetBonds()
    }
    pairs -= {tuple(sorted(p)) for p in broken}
    pairs |= {tuple(sorted(p)) for p in formed}
    for i, j in sorted(pairs):
        rw.AddBond(i, j, Chem.BondType.SINGLE)
    return rw.GetMol()


def _charge_ok(mol, max_charged: int) -> bool:
    charged = [a for a in mol.GetAtoms() if a.GetFormalCharge() != 0]
    if len(charged) > max_charged:
        return False
    return all(
        any(n.GetFormalCharge() * a.GetFormalCharge() < 0 for n in a.GetNeighbors())
        for a in charged
    )


def _new_charges_ok(edit: str, reactant, product, smalls: Dict[str, str]) -> bool:
    """Charges a product gains are allowed only on a released small molecule
    (``[C-]#[O+]``) or, for 1,2-H shifts, on atoms joined by a multiple bond to
    their counter-charge (``[C-]#[NH+]``, ``[CH-]=[OH+]``); ylides such as
    ``[CH2-][NH3+]`` and charge-separated adducts are rejected."""
    small_r, small_p = _small_atoms(reactant, smalls), _small_atoms(product, smalls)
    for a in product.GetAtoms():
        i, q = a.GetIdx(), a.GetFormalCharge()
        kept = q == reactant.GetAtomWithIdx(i).GetFormalCharge() and i not in small_r
        if q == 0 or kept or i in small_p:
            continue
        paired = any(
            b.GetBondTypeAsDouble() >= 2.0
            and b.GetOtherAtom(a).GetFormalCharge() * q < 0
            for b in a.GetBonds()
        )
        if edit != "h_shift_12" or not paired:
            return False
    return True


def lewis_structure(connectivity, max_charged: int = 2):
    """Neutral closed-shell Lewis structure of a connectivity, or ``None``.

    Args:
        connectivity: RDKit molecule whose bonds give the connectivity (orders and
            charges are ignored), hydrogens explicit.
        max_charged: most atoms with a formal charge.

    Returns:
        A sanitised RDKit molecule with bond orders and formal charges, no radical
        electrons, each charged atom bonded to an oppositely charged one; ``None``
        if no such structure exists.
    """
    Chem = _chem()
    from rdkit.Chem import rdDetermineBonds
    from rdkit.rdBase import BlockLogs

    mol = _connectivity(connectivity)
    mol.UpdatePropertyCache(strict=False)
    mol.AddConformer(Chem.Conformer(mol.GetNumAtoms()))  # needed, not used
    block = BlockLogs()
    try:
        rdDetermineBonds.DetermineBondOrders(mol, charge=0)
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):
        return None
    finally:
        del block
    if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return None
    if not _charge_ok(mol, max_charged):
        return None
    mol.RemoveAllConformers()
    return mol


def read_molecules(
    lines: Iterable[str],
    max_heavy: int = 7,
    max_atoms: int = 14,
) -> Tuple[List[InputMolecule], List[InputProblem]]:
    """Parse a molecule list: one ``SMILES [name]`` per line; lines starting with
    ``#`` are comments.

    Args:
        lines: the lines of the list (e.g. an open file).
        max_heavy: largest number of non-hydrogen atoms.
        max_atoms: largest number of atoms, hydrogens included.

    Returns:
        The usable molecules and the skipped lines with the reason (invalid SMILES,
        radical, charged, unsupported element, too large, no closed-shell Lewis
        structure, several fragments).  Nothing raises for a bad line.
    """
    Chem = _chem()
    from rdkit.rdBase import BlockLogs

    good: List[InputMolecule] = []
    bad: List[InputProblem] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip("\n")
        body = text.strip()
        if not body or body.startswith("#"):  # '#' inside SMILES is a triple bond
            continue
        smiles, _, name = body.partition(" ")
        block = BlockLogs()
        mol = Chem.MolFromSmiles(smiles)
        del block

        def skip(reason: str) -> None:
            bad.append(InputProblem(number, text, reason))
            log.warning("molecule list line %d (%r) skipped: %s", number, text, reason)

        if mol is None:
            skip(f"invalid SMILES {smiles!r}")
            continue
        others = sorted(
            {a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() not in ELEMENTS}
        )
        if others:
            skip(f"unsupported element(s) {', '.join(others)} (only H, C, N, O)")
            continue
        if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
            skip("radical (open shell); only closed-shell molecules are enumerated")
            continue
        if len(Chem.GetMolFrags(mol)) > 1:
            skip("several fragments; give one molecule per line")
            continue
        if Chem.GetFormalCharge(mol) != 0:
            skip(f"net charge {Chem.GetFormalCharge(mol)}; only neutral molecules")
            continue
        mol = Chem.AddHs(mol)
        n_heavy = sum(a.GetAtomicNum() > 1 for a in mol.GetAtoms())
        if n_heavy > max_heavy or mol.GetNumAtoms() > max_atoms:
            skip(
                f"{n_heavy} heavy atoms / {mol.GetNumAtoms()} atoms exceed "
                f"{max_heavy} / {max_atoms}"
            )
            continue
        lewis = lewis_structure(mol, max_charged=max(2, _n_charged(mol)))
        if lewis is None:
            skip("no neutral closed-shell Lewis structure")
            continue
        good.append(InputMolecule(number, smiles, name.strip(), lewis))
    return good, bad


def _n_charged(mol) -> int:
    return sum(a.GetFormalCharge() != 0 for a in mol.GetAtoms())


def _bond_code(bond) -> int:
    return 0 if bond is None else int(round(2 * bond.GetBondTypeAsDouble()))


def _cgr_smiles(reactant, product) -> str:
    """Canonical SMILES of the condensed reaction graph: every atom pair bonded in
    either molecule becomes a path through a dummy atom whose isotope encodes both
    bond orders; real atoms carry both formal charges in their isotope."""
    Chem = _chem()
    rw = Chem.RWMol()
    for a, b in zip(reactant.GetAtoms(), product.GetAtoms()):
        atom = Chem.Atom(a.GetAtomicNum())
        atom.SetIsotope(1 + 7 * (a.GetFormalCharge() + 3) + b.GetFormalCharge() + 3)
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    pairs = set()
    for m in (reactant, product):
        pairs |= {
            tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx())))
            for b in m.GetBonds()
        }
    for i, j in sorted(pairs):
        code = 1 + 7 * _bond_code(reactant.GetBondBetweenAtoms(i, j))
        code += _bond_code(product.GetBondBetweenAtoms(i, j))
        dummy = Chem.Atom(0)
        dummy.SetIsotope(code)
        dummy.SetNoImplicit(True)
        k = rw.AddAtom(dummy)
        rw.AddBond(i, k, Chem.BondType.SINGLE)
        rw.AddBond(k, j, Chem.BondType.SINGLE)
    mol = rw.GetMol()
    mol.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(mol)
    return Chem.MolToSmiles(mol)


def reaction_key(reactant, product, extra: str = "") -> str:
    """Dedup key of a mapped reaction: the canonical condensed-graph SMILES, the
    smaller of both directions, plus ``extra`` (geometric edits)."""
    key = min(_cgr_smiles(reactant, product), _cgr_smiles(product, reactant))
    return f"{key}|{extra}" if extra else key


def _mapped_smiles(mol) -> str:
    Chem = _chem()
    m = Chem.Mol(mol)
    for a in m.GetAtoms():
        a.SetAtomMapNum(a.GetIdx() + 1)
    return Chem.MolToSmiles(m)


def _heavy(mol, i: int) -> bool:
    return mol.GetAtomWithIdx(i).GetAtomicNum() > 1


def _heavy_neighbours(mol, i: int) -> List[int]:
    return sorted(
        n.GetIdx() for n in mol.GetAtomWithIdx(i).GetNeighbors() if n.GetAtomicNum() > 1
    )


def _hydrogens(mol, i: int) -> List[int]:
    return sorted(
        n.GetIdx()
        for n in mol.GetAtomWithIdx(i).GetNeighbors()
        if n.GetAtomicNum() == 1
    )


def _fragments(mol) -> List[Tuple[int, ...]]:
    Chem = _chem()
    return [tuple(sorted(f)) for f in Chem.GetMolFrags(mol)]


def _graph_edits(mol) -> Iterator[Tuple[str, list, list]]:
    """``(edit, broken, formed)`` bond changes of the connectivity edits of one
    molecule (atom index pairs), in a fixed order."""
    Chem = _chem()
    n = mol.GetNumAtoms()
    heavy = [i for i in range(n) if _heavy(mol, i)]
    dist = Chem.GetDistanceMatrix(mol)
    for a in heavy:
        for h in _hydrogens(mol, a):
            for b in heavy:
                if dist[a, b] == 1:
                    yield "h_shift_12", [(a, h)], [(b, h)]
                elif dist[a, b] == 2:
                    yield "h_shift_13", [(a, h)], [(b, h)]
    for bond in mol.GetBonds():
        i, j = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        if bond.IsInRing() and _heavy(mol, i) and _heavy(mol, j):
            yield "ring_opening", [(i, j)], []
    for a in heavy:
        for c in heavy:
            if a < c and 2 <= dist[a, c] <= 5:
                yield "ring_closing", [], [(a, c)]
    for a in heavy:  # eliminations: A–X and B–Y break, X–Y forms
        centres = [a] + _heavy_neighbours(mol, a)
        for b in centres:
            if b < a:
                continue
            for x in sorted(n.GetIdx() for n in mol.GetAtomWithIdx(a).GetNeighbors()):
                for y in sorted(
                    n.GetIdx() for n in mol.GetAtomWithIdx(b).GetNeighbors()
                ):
                    if x == y or x == b or y == a or (a == b and y <= x):
                        continue
                    if mol.GetBondBetweenAtoms(x, y) is not None:
                        continue
                    edit = "elimination_11" if a == b else "elimination_12"
                    yield edit, [(a, x), (b, y)], [(x, y)]


def _addition_edits(
    mol, n_small: int, inserts: bool
) -> Iterator[Tuple[str, list, list]]:
    """Bond changes adding the small molecule (the last ``n_small`` atoms of the
    complex ``mol``), the reverse of an elimination: X–Y breaks, A–X and B–Y
    form, A = B (1,1) or A–B bonded (1,2), heavy atoms.  X–Y is a bond of the small
    molecule (H2, H2O, HCN add across A–B) or, if ``inserts`` (CO, N2), a bond of
    the molecule that the small molecule's atoms A, B insert into."""
    n = mol.GetNumAtoms()
    small = set(range(n - n_small, n))
    for bond in mol.GetBonds():
        x, y = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if (x in small) == inserts:
            continue
        other = [i for i in range(n) if (i in small) != (x in small) and _heavy(mol, i)]
        for a in other:
            for b in [a] + [j for j in _heavy_neighbours(mol, a) if j in other]:
                for xx, yy in ((x, y), (y, x)):
                    if a == b and xx > yy:
                        continue
                    edit = "addition_11" if a == b else "addition_12"
                    yield edit, [(xx, yy)], [(a, xx), (b, yy)]


def _is_small(mol, atoms: Sequence[int], smalls: Dict[str, str]) -> bool:
    Chem = _chem()
    return Chem.MolToSmiles(Chem.RemoveHs(_sub_mol(mol, atoms))) in smalls.values()


def _small_atoms(mol, smalls: Dict[str, str]) -> set:
    """Atoms of the small-molecule fragments of a complex (empty if connected)."""
    frags = _fragments(mol)
    if len(frags) == 1:
        return set()
    return {i for f in frags if _is_small(mol, f, smalls) for i in f}


def _small_canonical() -> Dict[str, str]:
    Chem = _chem()
    return {
        k: Chem.MolToSmiles(Chem.MolFromSmiles(v)) for k, v in SMALL_MOLECULES.items()
    }


def _accept(edit: str, reactant, product, smalls: Dict[str, str]) -> bool:
    frags_r, frags_p = _fragments(reactant), _fragments(product)
    if edit.startswith("elimination"):
        return len(frags_p) == 2 and any(_is_small(product, f, smalls) for f in frags_p)
    return len(frags_p) == len(frags_r) - (1 if edit.startswith("addition") else 0)


def _embed(mol, seed: int, n_confs: int) -> Optional[np.ndarray]:
    """``(n_confs, N, 3)`` ETKDG conformers in Å (``None`` if embedding fails)."""
    from rdkit.Chem import AllChem

    mol = _chem().Mol(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    ids = list(AllChem.EmbedMultipleConfs(mol, n_confs, params))
    if not ids:
        params.useRandomCoords = True
        ids = list(AllChem.EmbedMultipleConfs(mol, n_confs, params))
    if not ids:
        return None
    return np.array([mol.GetConformer(i).GetPositions() for i in ids])


def _sub_mol(mol, atoms: Sequence[int]):
    Chem = _chem()
    rw = Chem.RWMol(mol)
    for i in sorted(set(range(mol.GetNumAtoms())) - set(atoms), reverse=True):
        rw.RemoveAtom(i)
    sub = rw.GetMol()
    Chem.SanitizeMol(sub)
    return sub


def _fragments_touch(
    numbers: np.ndarray, x: np.ndarray, frags: Sequence[Sequence[int]], scale: float
) -> bool:
    """True if atoms of different fragments are closer than ``scale`` times the
    sum of their covalent radii."""
    from ase.data import covalent_radii

    label = np.empty(len(x), dtype=int)
    for k, f in enumerate(frags):
        label[list(f)] = k
    r = covalent_radii[numbers]
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    near = d < scale * (r[:, None] + r[None, :])
    return bool(np.any(near & (label[:, None] != label[None, :])))


def _place(
    mol,
    reference: np.ndarray,
    seed: int,
    n_confs: int,
    gap: float,
    separation: float = 1.5,
) -> Optional[np.ndarray]:
    """Geometry of ``mol`` near ``reference`` (same atoms): each fragment embedded
    and Kabsch-aligned on the reference positions of its atoms (nearest of
    ``n_confs`` conformers), then fragments pushed apart in steps of ``gap`` Å
    until atoms of different fragments are ``separation`` times their covalent
    radii apart (so they do not look bonded)."""
    frags = _fragments(mol)
    x = np.zeros_like(reference)
    for frag in frags:
        idx = list(frag)
        if len(idx) == 1:
            x[idx] = reference[idx]
            continue
        confs = _embed(_sub_mol(mol, idx), seed, n_confs)
        if confs is None:
            return None
        aligned = [kabsch_align(c, reference[idx]) for c in confs]
        x[idx] = min(aligned, key=lambda c: float(np.sum((c - reference[idx]) ** 2)))
    if len(frags) > 1:
        numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        big = list(max(frags, key=len))
        centre = x[big].mean(0)
        for _ in range(40):
            if not _fragments_touch(numbers, x, frags, separation):
                break
            for frag in frags:
                if list(frag) == big:
                    continue
                d = x[list(frag)].mean(0) - centre
                norm = np.linalg.norm(d)
                d = d / norm if norm > 1e-6 else np.array([1.0, 0.0, 0.0])
                x[list(frag)] += gap * d
        else:
            return None
    return x


def _dihedral_atoms(mol, a: int, b: int) -> Optional[Tuple[int, int, int, int]]:
    na = sorted(
        n.GetIdx() for n in mol.GetAtomWithIdx(a).GetNeighbors() if n.GetIdx() != b
    )
    nb = sorted(
        n.GetIdx() for n in mol.GetAtomWithIdx(b).GetNeighbors() if n.GetIdx() != a
    )
    return (na[0], a, b, nb[0]) if na and nb else None


def _sp3(atom) -> bool:
    return all(b.GetBondTypeAsDouble() == 1.0 for b in atom.GetBonds())


def _linear(atom) -> bool:
    orders = [b.GetBondTypeAsDouble() for b in atom.GetBonds()]
    return 3.0 in orders or orders.count(2.0) >= 2


def _geometric_edits(mol, x: np.ndarray) -> Iterator[Tuple[str, np.ndarray, str]]:
    """``(edit, product positions, key suffix)`` of torsions and N inversions of a
    molecule at geometry ``x`` (Å); the suffix names the bond/atom by its
    symmetry class so symmetry-equivalent edits share a key."""
    Chem = _chem()
    from rdkit.Chem import rdMolTransforms

    ranks = list(Chem.CanonicalRankAtoms(mol, breakTies=False))
    for bond in mol.GetBonds():
        a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        atom_a, atom_b = bond.GetBeginAtom(), bond.GetEndAtom()
        order = bond.GetBondTypeAsDouble()
        if bond.IsInRing() or not (_heavy(mol, a) and _heavy(mol, b)):
            continue
        if order == 2.0 and {atom_a.GetSymbol(), atom_b.GetSymbol()} <= {"C"}:
            continue  # C=C twists pass through a diradical
        if order not in (1.0, 2.0) or _linear(atom_a) or _linear(atom_b):
            continue
        quad = _dihedral_atoms(mol, a, b)
        if quad is None:
            continue
        angle = 120.0 if order == 1.0 and _sp3(atom_a) and _sp3(atom_b) else 180.0
        conf = _with_positions(mol, x).GetConformer()
        phi = rdMolTransforms.GetDihedralDeg(conf, *quad)
        rdMolTransforms.SetDihedralDeg(conf, *quad, phi + angle)
        cls = "-".join(str(r) for r in sorted((ranks[a], ranks[b])))
        yield "torsion", conf.GetPositions(), f"torsion:{cls}:{angle:.0f}"
    for atom in mol.GetAtoms():
        i = atom.GetIdx()
        nbrs = [n.GetIdx() for n in atom.GetNeighbors()]
        if atom.GetSymbol() != "N" or len(nbrs) != 3 or atom.GetFormalCharge():
            continue
        if not _sp3(atom) or any(not _sp3(mol.GetAtomWithIdx(j)) for j in nbrs):
            continue  # amide/enamine/aniline N are (nearly) planar
        centre = x[nbrs].mean(0)
        normal = np.cross(x[nbrs[1]] - x[nbrs[0]], x[nbrs[2]] - x[nbrs[0]])
        normal /= np.linalg.norm(normal)
        y = x.copy()
        y[i] = x[i] - 2.0 * np.dot(x[i] - centre, normal) * normal
        yield "inversion", y, f"inversion:{ranks[i]}"


def _with_positions(mol, x: np.ndarray):
    """Copy of ``mol`` whose only conformer has positions ``x`` (Å)."""
    Chem = _chem()
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    conf = Chem.Conformer(m.GetNumAtoms())
    for i, p in enumerate(x):
        conf.SetAtomPosition(i, p.tolist())
    m.AddConformer(conf, assignId=True)
    return m


def _with_stereo(mol, x: np.ndarray):
    """Copy of ``mol`` with stereo perceived from positions ``x`` (Å)."""
    m = _with_positions(mol, x)
    _chem().AssignStereochemistryFrom3D(m)
    return m


def enumerate_reactions(
    molecules: Sequence[InputMolecule],
    edits: Sequence[str] = EDITS,
    seed: int = 0,
    n_confs: int = 10,
    max_atoms: int = 14,
    small_molecules: Optional[Sequence[str]] = None,
    gap: float = 0.5,
) -> List[EnumeratedReaction]:
    """Enumerate, deduplicate and embed the reactions of ``molecules``.

    Args:
        molecules: input molecules (:func:`read_molecules`).
        edits: edit types to apply (subset of :data:`EDITS`).
        seed: ETKDG random seed; the output is a function of the input and seed.
        n_confs: conformers tried per product fragment (the one nearest the
            reference geometry is kept).
        max_atoms: largest reaction (atoms, hydrogens included; additions add the
            small molecule's atoms).
        small_molecules: names (keys of :data:`SMALL_MOLECULES`) released or added;
            default all.
        gap: step in Å by which separate fragments are pushed apart.

    Returns:
        The reactions in input order (molecule, then edit order), first
        occurrence of every key kept.
    """
    Chem = _chem()
    unknown = sorted(set(edits) - set(EDITS))
    if unknown:
        raise EnumerationError(f"unknown edit type(s) {unknown}; choose from {EDITS}")
    names = list(SMALL_MOLECULES) if small_molecules is None else list(small_molecules)
    bad = sorted(set(names) - set(SMALL_MOLECULES))
    if bad:
        raise EnumerationError(
            f"unknown small molecule(s) {bad}; choose from {list(SMALL_MOLECULES)}"
        )
    smalls = {k: v for k, v in _small_canonical().items() if k in names}
    small_mols = {k: Chem.AddHs(Chem.MolFromSmiles(SMALL_MOLECULES[k])) for k in names}
    wanted = set(edits)
    seen: Dict[str, EnumeratedReaction] = {}
    out: List[EnumeratedReaction] = []

    def emit(edit, reactant, product, xr, xp, source, extra=""):
        key = reaction_key(reactant, product, extra)
        if key in seen:
            return
        xp = kabsch_align(xp, xr)
        numbers = np.array([a.GetAtomicNum() for a in reactant.GetAtoms()])
        if has_clash(numbers, xr) or has_clash(numbers, xp) or rmsd(xr, xp) < 1e-3:
            return
        if extra:
            reactant, product = _with_stereo(reactant, xr), _with_stereo(product, xp)
        r = EnumeratedReaction(
            edit=edit,
            reactant_smiles=_mapped_smiles(reactant),
            product_smiles=_mapped_smiles(product),
            key=key,
            symbols=tuple(a.GetSymbol() for a in reactant.GetAtoms()),
            reactant_positions=np.round(xr, 6),
            product_positions=np.round(xp, 6),
            source=source,
        )
        seen[key] = r
        out.append(r)

    def graph_reactions(reactant, candidates, source):
        """Graph edits of one (connected or complex) reactant; the connected side
        is embedded, the other placed on it."""
        n_charged = _n_charged(reactant)
        x_reactant: List[Optional[np.ndarray]] = []
        for edit, broken, formed in candidates:
            if edit not in wanted:
                continue
            product = lewis_structure(
                _connectivity(reactant, broken, formed), max_charged=n_charged + 2
            )
            if product is None or not _accept(edit, reactant, product, smalls):
                continue
            if not _new_charges_ok(edit, reactant, product, smalls):
                continue
            if reaction_key(reactant, product) in seen:
                continue
            if len(_fragments(reactant)) == 1:
                if not x_reactant:
                    x_reactant.append(_first(_embed(reactant, seed, 1)))
                xr = x_reactant[0]
                xp = None if xr is None else _place(product, xr, seed, n_confs, gap)
            else:
                xp = _first(_embed(product, seed, 1))
                xr = None if xp is None else _place(reactant, xp, seed, n_confs, gap)
            if xr is None or xp is None:
                log.debug("%s: %s could not be embedded", source, edit)
                continue
            emit(edit, reactant, product, xr, xp, source)

    for m in molecules:
        mol = m.mol
        source = f"line {m.line}: {m.smiles}" + (f" {m.name}" if m.name else "")
        if mol.GetNumAtoms() <= max_atoms:
            graph_reactions(mol, _graph_edits(mol), source)
            if wanted & {"torsion", "inversion"}:
                x = _first(_embed(mol, seed, 1))
                if x is not None:
                    for edit, xp, extra in _geometric_edits(mol, x):
                        if edit in wanted:
                            emit(edit, mol, mol, x, xp, source, extra)
        if wanted & {"addition_11", "addition_12"}:
            for name, small in small_mols.items():
                n_small = small.GetNumAtoms()
                if mol.GetNumAtoms() + n_small > max_atoms:
                    continue
                complex_ = Chem.CombineMols(mol, small)
                graph_reactions(
                    complex_,
                    _addition_edits(complex_, n_small, name in INSERTING),
                    f"{source} + {name}",
                )
    return out


def listed_keys(paths: Sequence[PathLike]) -> set:
    """The reaction ``key`` s of enumerated reaction lists (YAML files written by
    :func:`write_reaction_list`), to enumerate more reactions without repeating any.

    Raises:
        EnumerationError: a file has no ``reactions`` list or an entry has no ``key``.
    """
    keys = set()
    for path in paths:
        with open(path) as fh:
            listed = (yaml.safe_load(fh) or {}).get("reactions")
        if not isinstance(listed, list):
            raise EnumerationError(f"{path}: no 'reactions' list")
        for k, entry in enumerate(listed):
            if not isinstance(entry, dict) or "key" not in entry:
                raise EnumerationError(
                    f"{path}: reaction {k} has no 'key' (not an enumerated list)"
                )
            keys.add(entry["key"])
    return keys


def select_per_edit(
    reactions: Sequence[EnumeratedReaction], per_edit: int, seed: int = 0
) -> List[EnumeratedReaction]:
    """At most ``per_edit`` reactions of each edit type, drawn without replacement
    with ``numpy.random.default_rng(seed)``, in their original order."""
    rng = np.random.default_rng(seed)
    keep = set()
    for edit in EDITS:
        idx = [k for k, r in enumerate(reactions) if r.edit == edit]
        if len(idx) > per_edit:
            idx = rng.choice(idx, size=per_edit, replace=False).tolist()
        keep.update(idx)
    return [r for k, r in enumerate(reactions) if k in keep]


def _first(confs: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return None if confs is None else confs[0]


class _LiteralDumper(yaml.SafeDumper):
    """YAML dumper writing multi-line strings (xyz blocks) as literal blocks."""


def _str_representer(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def _xyz_block(symbols: Sequence[str], positions: np.ndarray) -> str:
    return "".join(
        f"{s} {x:.6f} {y:.6f} {z:.6f}\n" for s, (x, y, z) in zip(symbols, positions)
    )


def reaction_list_yaml(
    reactions: Sequence[EnumeratedReaction], first_id: int = 0, header: str = ""
) -> str:
    """The reactions as a YAML reaction list (:mod:`.reactions` schema) with extra
    keys ``edit``, ``reactant_smiles``, ``product_smiles`` (atom-mapped, map
    ``i + 1`` = atom ``i`` of the xyz blocks), ``key`` and ``source``.

    Args:
        reactions: enumerated reactions.
        first_id: id of the first reaction; the others follow consecutively.
        header: comment lines put at the top (without ``#``).
    """
    entries = [
        {
            "id": first_id + k,
            "name": r.name,
            "edit": r.edit,
            "reactant_smiles": r.reactant_smiles,
            "product_smiles": r.product_smiles,
            "key": r.key,
            "source": r.source,
            "reactant": {"xyz": _xyz_block(r.symbols, r.reactant_positions)},
            "product": {"xyz": _xyz_block(r.symbols, r.product_positions)},
        }
        for k, r in enumerate(reactions)
    ]
    body = yaml.dump(
        {"reactions": entries},
        Dumper=_LiteralDumper,
        sort_keys=False,
        allow_unicode=True,
        width=1000,
    )
    comments = "".join(f"# {ln}\n".replace("# \n", "#\n") for ln in header.splitlines())
    return comments + body


def write_reaction_list(
    reactions: Sequence[EnumeratedReaction],
    path: PathLike,
    first_id: int = 0,
    header: str = "",
) -> Path:
    """Write :func:`reaction_list_yaml` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(reaction_list_yaml(reactions, first_id, header))
    return path
