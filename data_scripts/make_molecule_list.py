#!/usr/bin/env python
"""Write the molecule list ``schnetpack_hessian/generate/molecules_chon.smi``.

The list is a hand-picked set of small closed-shell H/C/N/O molecules (``SEEDS``:
the usual suspects of reactive data sets: tautomer pairs, carbonyls, amines,
nitriles, small rings, dienes) plus every molecule made from a seed by replacing
one hydrogen (one per symmetry class) with CH3, OH or NH2, kept if it has at most
``--max-heavy`` heavy atoms and ``--max-atoms`` atoms, no O–O, N–O–O or N–N–N
chain, and a neutral closed-shell structure.  Canonical SMILES, sorted by heavy
atoms then SMILES; deterministic.  Run from the repository root::

    python data_scripts/make_molecule_list.py --out schnetpack_hessian/generate/molecules_chon.smi
"""

import argparse
import sys

from rdkit import Chem

SEEDS = """
[H][H] O N C C#N [C-]#[O+] N#N O=C=O C=O CO CN OO NN NO N=O C=N
C#C C=C CC CC#N C=CC C#CC CCC C=C=C C=C=O N=C=O OC#N NC#N N=C=N
CC=O CC(=O)O CC(N)=O CC(C)=O COC CNC CCO CCN OCCO NCCO NCCN O=CC=O
OC=O NC=O NC(N)=O NC(=O)O OC(=O)O O=CO OC=C NC=C CN=O C=NO CC=NO
C=CC=C C=CC=O C=CC#N C=CN C=CO C#CC=C C#CC#C N#CC#N C=CC=N O=CC#N
O=CCO CC(O)=O CC=C CC=N CN=C C=NC=O NC=N OC=N N=NC CN=NC N=N
C1CC1 C1CO1 C1CN1 C1=CC1 C1CCC1 C1COC1 C1CNC1 C1=CCC1 C1=CC=C1 C1CC=C1
O=C1CC1 O=C1CO1 C1OC=C1 c1ccoc1 c1cc[nH]c1 c1ccccc1 c1ccncc1 c1cocn1
c1cnc[nH]1 c1cn[nH]c1 c1ccnnc1 c1cnccn1 C1=CCC=C1 O=C1C=CC=C1 C1=COC=C1
O=C1C=CC1 N1=CC1 C1=NC1 O=C1NC1 O=C1OC1 C1CCOC1 C1CCNC1 C1=CCOC1
CC#CC CC=CC=O CC(=O)C=O OCC=O NCC=O CC(O)C=O NC(=O)C=O OC(=O)C=O
CC(=O)N C=C(C)C C=C(O)C CC(=N)O CC(N)=N N=C(N)N
"""

GROUPS = ("C", "O", "N")
FORBIDDEN = [
    Chem.MolFromSmarts(s) for s in ("[OX2][OX2]", "[#7][#8][#8]", "[#7][#7][#7]")
]


def _ok(mol, max_heavy, max_atoms):
    mh = Chem.AddHs(mol)
    if mol.GetNumAtoms() > max_heavy or mh.GetNumAtoms() > max_atoms:
        return False
    if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return False
    return not any(mol.HasSubstructMatch(p) for p in FORBIDDEN[1:]) and (
        Chem.MolToSmiles(mol) == "OO" or not mol.HasSubstructMatch(FORBIDDEN[0])
    )


def substituted(mol):
    """Canonical SMILES of ``mol`` with one H (per symmetry class) replaced by
    each of ``GROUPS``."""
    mh = Chem.AddHs(mol)
    ranks = list(Chem.CanonicalRankAtoms(mh, breakTies=False))
    seen, out = set(), []
    for atom in mh.GetAtoms():
        if atom.GetAtomicNum() != 1 or ranks[atom.GetIdx()] in seen:
            continue
        seen.add(ranks[atom.GetIdx()])
        for g in GROUPS:
            rw = Chem.RWMol(mh)
            rw.GetAtomWithIdx(atom.GetIdx()).SetAtomicNum(Chem.Atom(g).GetAtomicNum())
            try:
                new = rw.GetMol()
                Chem.SanitizeMol(new)
                out.append(Chem.MolToSmiles(Chem.RemoveHs(new)))
            except (ValueError, RuntimeError):
                continue
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--max-heavy", type=int, default=7)
    p.add_argument("--max-atoms", type=int, default=14)
    args = p.parse_args(argv)
    found = {}
    for smi in SEEDS.split():
        mol = Chem.MolFromSmiles(smi)
        can = Chem.MolToSmiles(mol)
        if _ok(mol, args.max_heavy, args.max_atoms):
            found.setdefault(can, "seed")
        for sub in substituted(mol):
            m = Chem.MolFromSmiles(sub)
            if m is not None and _ok(m, args.max_heavy, args.max_atoms):
                found.setdefault(sub, f"from {can}")
    order = sorted(found, key=lambda s: (Chem.MolFromSmiles(s).GetNumAtoms(), s))
    header = [
        "# Small closed-shell H/C/N/O molecules for reaction enumeration",
        "# (schnetpack_hessian.generate.enumerate, spkhess-generate enumerate).",
        f"# {len(order)} molecules, <= {args.max_heavy} heavy atoms, <= "
        f"{args.max_atoms} atoms. Made by data_scripts/make_molecule_list.py",
        "# (hand-picked seeds plus their single CH3/OH/NH2 substitutions):",
        "#   python data_scripts/make_molecule_list.py "
        f"--max-heavy {args.max_heavy} --max-atoms {args.max_atoms} --out {args.out}",
        "# Format: SMILES, then its origin. Lines starting with '#' are comments.",
    ]
    with open(args.out, "w") as fh:
        fh.write("\n".join(header) + "\n")
        for s in order:
            fh.write(f"{s} {found[s]}\n")
    print(f"wrote {len(order)} molecules to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
