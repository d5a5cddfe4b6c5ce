"""Reaction lists: YAML files naming reactant and product geometries.

A reaction list looks like::

    reactions:
      - id: 0
        name: HCN -> HNC
        charge: 0        # optional, default 0
        multiplicity: 1  # optional, default 1 (closed shell)
        reactant:
          xyz: |
            H 0.0 0.0 -1.06
            C 0.0 0.0  0.00
            N 0.0 0.0  1.16
        product:
          xyz: |
            ...
        ts_guess:        # optional
          xyz: |
            ...
      - id: 1
        name: formaldehyde -> hydroxycarbene
        reactant: {smiles: "[H:3][C:1](=[O:2])[H:4]"}
        product: {smiles: "[H:3][C:1][O:2][H:4]"}

Geometries are ``xyz`` blocks (one ``symbol x y z`` line per atom, Å; an optional
standard xyz header of atom count and comment line is accepted), a path ``file:``
to anything ASE reads, or an atom-mapped ``smiles`` with explicit hydrogens that is
embedded in 3D by RDKit (atoms ordered by map number, so reactant and product atoms
correspond).  Reactant and product must list the same elements in the same order.
"""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import yaml
from ase import Atoms
from ase.io import read

__all__ = [
    "ReactionError",
    "Reaction",
    "load_reactions",
    "parse_geometry",
    "parse_shard",
    "select_shard",
]


class ReactionError(ValueError):
    """A reaction list entry is malformed."""


@dataclass(frozen=True)
class Reaction:
    """One reaction of a reaction list.

    Attributes:
        id: integer reaction id, stored as the ``reaction`` label.
        name: human-readable name.
        reactant: reactant geometry (Å), atoms in mapped order.
        product: product geometry (Å), same elements in the same order.
        charge: total charge.
        multiplicity: spin multiplicity 2S+1.
        ts_guess: optional transition-state guess, same atom order; without it
            the guess comes from an interpolation between reactant and product.
    """

    id: int
    name: str
    reactant: Atoms
    product: Atoms
    charge: int = 0
    multiplicity: int = 1
    ts_guess: Optional[Atoms] = None

    @property
    def tag(self) -> str:
        """Directory-safe identifier ``r{id:04d}``."""
        return f"r{self.id:04d}"


def _atoms_from_xyz_block(text: str, where: str) -> Atoms:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines and lines[0].strip().isdigit():
        lines = lines[2:]
    symbols, coords = [], []
    for ln in lines:
        parts = ln.split()
        if len(parts) < 4:
            raise ReactionError(f"{where}: xyz line {ln!r} needs 'symbol x y z'")
        symbols.append(parts[0])
        coords.append([float(v) for v in parts[1:4]])
    if not symbols:
        raise ReactionError(f"{where}: empty xyz block")
    return Atoms(symbols=symbols, positions=np.array(coords))


def _atoms_from_smiles(smiles: str, where: str, seed: int = 42) -> Atoms:
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ReactionError(
            f"{where}: SMILES input needs RDKit (pip install rdkit)"
        ) from err
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        raise ReactionError(f"{where}: RDKit cannot parse SMILES {smiles!r}")
    mol.UpdatePropertyCache(strict=False)
    Chem.SanitizeMol(
        mol, Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_PROPERTIES
    )
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ReactionError(f"{where}: RDKit could not embed {smiles!r} in 3D")
    maps = [a.GetAtomMapNum() for a in mol.GetAtoms()]
    order = list(range(mol.GetNumAtoms()))
    if all(m > 0 for m in maps):
        order = sorted(order, key=lambda i: maps[i])
    elif any(m > 0 for m in maps):
        raise ReactionError(
            f"{where}: SMILES {smiles!r} maps only some atoms; map all atoms "
            "(hydrogens explicit) or none"
        )
    pos = mol.GetConformer().GetPositions()
    symbols = [mol.GetAtomWithIdx(i).GetSymbol() for i in order]
    return Atoms(symbols=symbols, positions=pos[order])


def parse_geometry(spec: Union[Dict[str, Any], str], where: str) -> Atoms:
    """Geometry from a reaction-list entry (``xyz``, ``file`` or ``smiles``).

    Args:
        spec: mapping with one of the keys ``xyz``, ``file``, ``smiles``, or an xyz
            block as a plain string.
        where: description of the entry for error messages.

    Returns:
        The structure, positions in Å.
    """
    if isinstance(spec, str):
        return _atoms_from_xyz_block(spec, where)
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ReactionError(
            f"{where}: give exactly one of 'xyz', 'file' or 'smiles', got {spec!r}"
        )
    ((key, value),) = spec.items()
    if key == "xyz":
        return _atoms_from_xyz_block(str(value), where)
    if key == "file":
        return read(str(value))
    if key == "smiles":
        return _atoms_from_smiles(str(value), where)
    raise ReactionError(f"{where}: unknown geometry key {key!r}")


def load_reactions(source: Union[str, Path, io.TextIOBase]) -> List[Reaction]:
    """Read a YAML reaction list.

    Args:
        source: path of the YAML file or an open text stream.

    Returns:
        The reactions, sorted by id.

    Raises:
        ReactionError: on missing keys, duplicate ids or mismatched atoms.
    """
    if isinstance(source, (str, Path)):
        base = Path(source).parent
        with open(source) as fh:
            doc = yaml.safe_load(fh)
        name = str(source)
    else:
        base, doc, name = Path("."), yaml.safe_load(source), "<stream>"
    entries = doc.get("reactions") if isinstance(doc, dict) else None
    if not entries:
        raise ReactionError(f"{name}: no 'reactions:' list")
    reactions, seen = [], set()
    for pos, entry in enumerate(entries):
        rid = int(entry.get("id", pos))
        where = f"{name}, reaction {rid} ({entry.get('name', '?')})"
        if rid in seen:
            raise ReactionError(f"{where}: duplicate id {rid}")
        seen.add(rid)
        geoms = {}
        for role in ("reactant", "product", "ts_guess"):
            if role not in entry:
                if role == "ts_guess":
                    continue
                raise ReactionError(f"{where}: missing {role!r}")
            spec = entry[role]
            if isinstance(spec, dict) and "file" in spec:
                spec = {"file": str(base / spec["file"])}
            geoms[role] = parse_geometry(spec, f"{where}, {role}")
        r = geoms["reactant"]
        for role, g in geoms.items():
            if g.get_chemical_symbols() != r.get_chemical_symbols():
                raise ReactionError(
                    f"{where}: reactant atoms {r.get_chemical_symbols()} and "
                    f"{role} atoms {g.get_chemical_symbols()} differ in element "
                    "or order"
                )
        reactions.append(
            Reaction(
                id=rid,
                name=str(entry.get("name", f"reaction {rid}")),
                reactant=r,
                product=geoms["product"],
                charge=int(entry.get("charge", 0)),
                multiplicity=int(entry.get("multiplicity", 1)),
                ts_guess=geoms.get("ts_guess"),
            )
        )
    return sorted(reactions, key=lambda x: x.id)


def parse_shard(text: str) -> Tuple[int, int]:
    """Parse ``"I/N"`` (0 ≤ I < N) into ``(I, N)``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as err:
        raise ReactionError(f"shard {text!r} is not of the form I/N") from err
    if not 0 <= i < n:
        raise ReactionError(f"shard {text!r}: need 0 <= I < N")
    return i, n


def select_shard(
    reactions: Sequence[Reaction], index: int, count: int
) -> List[Reaction]:
    """Reactions of shard ``index`` of ``count``: every ``count``-th, starting at
    ``index``, in list order.  The shards partition the list."""
    return [r for k, r in enumerate(reactions) if k % count == index]
