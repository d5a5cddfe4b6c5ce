"""Reactions in a data set: barrier heights and energy profiles along the IRC.

Structures are grouped by their ``reaction`` label.  Within a reaction, the path runs
from the reactant (ξ = 0) to the product (ξ = 1); each IRC point and the TS get the
progress coordinate ``ξ = d_R / (d_R + d_P)`` with ``d`` the RMSD (Kabsch, atom-mapped)
to the reactant and product, so any file works whatever order it stores the IRC in.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from schnetpack_hessian import properties as P
from schnetpack_hessian.generate.geometry import rmsd

__all__ = [
    "ReactionPath",
    "reaction_paths",
    "barrier_rows",
    "irc_profile",
    "IRCProfile",
]


@dataclass
class ReactionPath:
    """The labelled structures of one reaction.

    Attributes:
        reaction: reaction id.
        name: its name from the file's metadata ('' if none).
        reactant, product, ts: structure indices (None where missing).
        path: indices of reactant, IRC points, TS and product ordered by ξ.
        xi: progress coordinate of each entry of ``path``.
    """

    reaction: int
    name: str = ""
    reactant: Optional[int] = None
    product: Optional[int] = None
    ts: Optional[int] = None
    irc: List[int] = field(default_factory=list)
    path: List[int] = field(default_factory=list)
    xi: List[float] = field(default_factory=list)


def _progress(x: np.ndarray, x_r: np.ndarray, x_p: np.ndarray) -> float:
    d_r, d_p = rmsd(x, x_r), rmsd(x, x_p)
    return 0.5 if d_r + d_p == 0 else d_r / (d_r + d_p)


def reaction_paths(
    structures: Sequence[Atoms], names: Optional[Dict[int, str]] = None
) -> Dict[int, ReactionPath]:
    """Group labelled structures by reaction and order each reaction's path.

    Args:
        structures: ``iread``-style structures with ``info["kind"]`` and
            ``info["reaction"]`` (reaction ``-1``, unlabelled, is skipped).
        names: reaction id → name.
    """
    names = names or {}
    paths: Dict[int, ReactionPath] = {}
    for i, atoms in enumerate(structures):
        rid = int(atoms.info.get(P.reaction, -1))
        if rid < 0:
            continue
        rp = paths.setdefault(rid, ReactionPath(rid, names.get(rid, "")))
        kind = atoms.info.get(P.kind)
        if kind in ("reactant", "product", "ts") and getattr(rp, kind) is None:
            setattr(rp, kind, i)
        elif kind == "irc":
            rp.irc.append(i)
    for rp in paths.values():
        if rp.reactant is None or rp.product is None:
            continue
        x_r = structures[rp.reactant].positions
        x_p = structures[rp.product].positions
        inner = rp.irc + ([rp.ts] if rp.ts is not None else [])
        xi = {rp.reactant: 0.0, rp.product: 1.0}
        for i in inner:
            if len(structures[i]) == len(x_r):
                xi[i] = _progress(structures[i].positions, x_r, x_p)
        rp.path = sorted(xi, key=xi.get)
        rp.xi = [xi[i] for i in rp.path]
    return paths


def barrier_rows(
    paths: Dict[int, ReactionPath],
    ref_energy: Sequence[float],
    model_energy: Sequence[float],
) -> List[Dict[str, object]]:
    """Forward (TS − reactant) and reverse (TS − product) barriers, eV.

    Returns:
        One row per reaction with a TS and at least one minimum: ``reaction``,
        ``name``, ``barrier_fwd_ref``, ``barrier_fwd_model``, ``barrier_fwd_error``,
        and the same for ``rev`` (NaN where the minimum is missing).
    """
    rows = []
    for rid, rp in sorted(paths.items()):
        if rp.ts is None or (rp.reactant is None and rp.product is None):
            continue
        row: Dict[str, object] = {"reaction": rid, "name": rp.name}
        for label, end in (("fwd", rp.reactant), ("rev", rp.product)):
            ref = mod = float("nan")
            if end is not None:
                ref = ref_energy[rp.ts] - ref_energy[end]
                mod = model_energy[rp.ts] - model_energy[end]
            row[f"barrier_{label}_ref"] = ref
            row[f"barrier_{label}_model"] = mod
            row[f"barrier_{label}_error"] = mod - ref
        rows.append(row)
    return rows


@dataclass(frozen=True)
class IRCProfile:
    """Reference and model energies along one reaction path (eV, relative to the
    reactant of each).

    Attributes:
        reaction: reaction id.
        name: reaction name.
        xi: ``(P,)`` progress coordinate.
        ref: ``(P,)`` reference energies relative to the reference reactant.
        model: ``(P,)`` model energies relative to the model's reactant.
        ts_position: index of the TS in the path (-1 if the data has none).
        barrier_error: max(model) − max(ref) along the path.
        max_deviation: max |model − ref| along the path.
        maximum_at_ts: whether the model's highest point is the reference TS.
    """

    reaction: int
    name: str
    xi: np.ndarray
    ref: np.ndarray
    model: np.ndarray
    ts_position: int
    barrier_error: float
    max_deviation: float
    maximum_at_ts: bool


def irc_profile(
    rp: ReactionPath, ref_energy: Sequence[float], model_energy: Sequence[float]
) -> Optional[IRCProfile]:
    """Energy profile of a reaction with IRC points, None if it has none."""
    if not rp.irc or len(rp.path) < 3:
        return None
    idx = np.array(rp.path)
    ref = np.asarray(ref_energy, dtype=np.float64)[idx]
    mod = np.asarray(model_energy, dtype=np.float64)[idx]
    ref, mod = ref - ref[0], mod - mod[0]
    ts_pos = rp.path.index(rp.ts) if rp.ts in rp.path else -1
    return IRCProfile(
        reaction=rp.reaction,
        name=rp.name,
        xi=np.asarray(rp.xi),
        ref=ref,
        model=mod,
        ts_position=ts_pos,
        barrier_error=float(mod.max() - ref.max()),
        max_deviation=float(np.abs(mod - ref).max()),
        maximum_at_ts=bool(ts_pos >= 0 and int(np.argmax(mod)) == ts_pos),
    )
