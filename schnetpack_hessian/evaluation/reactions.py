"""Reactions in a data set: barrier heights and energy profiles along the IRC.

Structures are grouped by their ``reaction`` label.  Within a reaction, the path runs
from the reactant (ξ = 0) to the product (ξ = 1); each IRC point and the TS get the
progress coordinate ``ξ = d_R / (d_R + d_P)`` with ``d`` the RMSD (Kabsch, atom-mapped)
to the reactant and product, so any file works whatever order it stores the IRC in.
Barriers and profile errors are :class:`~schnetpack_hessian.quantities.Quantity`
energies in eV; :data:`BARRIER_ROW`, :data:`BARRIER_STATS`, :data:`PROFILE_ROW` and
:data:`PROFILE_STATS` declare every key and its dimension.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.generate.geometry import rmsd
from schnetpack_hessian.quantities import Dimension, Quantity, Schema

__all__ = [
    "ReactionPath",
    "reaction_paths",
    "barrier_rows",
    "barrier_stats",
    "irc_profile",
    "profile_stats",
    "IRCProfile",
    "BARRIER_ROW",
    "BARRIER_STATS",
    "PROFILE_ROW",
    "PROFILE_STATS",
]

_E = Dimension.ENERGY

#: The keys of a reaction's barrier row (:func:`barrier_rows`); None: labels.
BARRIER_ROW = Schema(
    "barrier row",
    {
        "reaction": None,
        "name": None,
        **{
            f"barrier_{way}_{what}": _E
            for way in ("fwd", "rev")
            for what in ("ref", "model", "error")
        },
    },
)

#: The keys of :func:`barrier_stats`; None: counts.
BARRIER_STATS = Schema(
    "barrier statistics",
    {"barrier_fwd_mae": _E, "barrier_rev_mae": _E, "n_reactions": None},
)

#: The keys of a profile's row (:meth:`IRCProfile.as_row`); None: labels, flags.
PROFILE_ROW = Schema(
    "IRC profile row",
    {
        "reaction": None,
        "name": None,
        "barrier_error": _E,
        "max_deviation": _E,
        "maximum_at_ts": None,
    },
)

#: The keys of :func:`profile_stats`; None: counts and the fraction of profiles
#: whose maximum is at the TS.
PROFILE_STATS = Schema(
    "IRC profile statistics",
    {
        "n_profiles": None,
        "irc_barrier_mae": _E,
        "irc_max_deviation_mean": _E,
        "irc_maximum_at_ts_rate": None,
    },
)


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
    structures: Sequence[HessianRecord], names: Optional[Dict[int, str]] = None
) -> Dict[int, ReactionPath]:
    """Group labelled structures by reaction and order each reaction's path.

    Args:
        structures: records with their ``kind`` and ``reaction`` (reaction ``-1``,
            unlabelled, is skipped) and positions ``(N, 3)`` in Å.
        names: reaction id → name.
    """
    names = names or {}
    paths: Dict[int, ReactionPath] = {}
    for i, record in enumerate(structures):
        rid = int(record.reaction)
        if rid < 0:
            continue
        rp = paths.setdefault(rid, ReactionPath(rid, names.get(rid, "")))
        kind = record.kind
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
            if structures[i].n_atoms == len(x_r):
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

    Args:
        paths: the reactions (:func:`reaction_paths`).
        ref_energy, model_energy: energy of every structure, eV.

    Returns:
        One row per reaction with a TS and at least one minimum (:data:`BARRIER_ROW`):
        ``reaction``, ``name``, ``barrier_fwd_ref``, ``barrier_fwd_model``,
        ``barrier_fwd_error``, and the same for ``rev`` (NaN where the minimum is
        missing).
    """
    rows = []
    for rid, rp in sorted(paths.items()):
        if rp.ts is None or (rp.reactant is None and rp.product is None):
            continue
        row = BARRIER_ROW(reaction=rid, name=rp.name)
        for label, end in (("fwd", rp.reactant), ("rev", rp.product)):
            ref = mod = float("nan")
            if end is not None:
                ref = ref_energy[rp.ts] - ref_energy[end]
                mod = model_energy[rp.ts] - model_energy[end]
            row.update(
                BARRIER_ROW(
                    **{
                        f"barrier_{label}_ref": ref,
                        f"barrier_{label}_model": mod,
                        f"barrier_{label}_error": mod - ref,
                    }
                )
            )
        rows.append(row)
    return rows


def _mean_abs(values: Sequence[float]) -> float:
    """Mean absolute value of the finite ``values`` (NaN if none)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    return float(np.abs(v).mean()) if len(v) else float("nan")


def barrier_stats(rows: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """MAE of the forward and reverse barriers of :func:`barrier_rows` (eV; NaN
    where no reaction has one) and the number of reactions (:data:`BARRIER_STATS`)."""
    return BARRIER_STATS(
        barrier_fwd_mae=_mean_abs([b["barrier_fwd_error"] for b in rows]),
        barrier_rev_mae=_mean_abs([b["barrier_rev_error"] for b in rows]),
        n_reactions=len(rows),
    )


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
        barrier_error: max(model) − max(ref) along the path, an energy.
        max_deviation: max |model − ref| along the path, an energy.
        maximum_at_ts: whether the model's highest point is the reference TS.
    """

    reaction: int
    name: str
    xi: np.ndarray
    ref: np.ndarray
    model: np.ndarray
    ts_position: int
    barrier_error: Quantity
    max_deviation: Quantity
    maximum_at_ts: bool

    def as_row(self) -> Dict[str, object]:
        """The profile's errors as a :data:`PROFILE_ROW`."""
        return PROFILE_ROW(
            reaction=self.reaction,
            name=self.name,
            barrier_error=self.barrier_error,
            max_deviation=self.max_deviation,
            maximum_at_ts=self.maximum_at_ts,
        )


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
        barrier_error=Quantity(mod.max() - ref.max(), _E),
        max_deviation=Quantity(np.abs(mod - ref).max(), _E),
        maximum_at_ts=bool(ts_pos >= 0 and int(np.argmax(mod)) == ts_pos),
    )


def profile_stats(profiles: Sequence[IRCProfile]) -> Dict[str, object]:
    """Mean absolute barrier error and mean maximum deviation of ``profiles`` (eV),
    and the fraction whose maximum is at the TS (:data:`PROFILE_STATS`; only the
    count when there are no profiles)."""
    stats = PROFILE_STATS(n_profiles=len(profiles))
    if profiles:
        stats.update(
            PROFILE_STATS(
                irc_barrier_mae=_mean_abs([p.barrier_error for p in profiles]),
                irc_max_deviation_mean=float(
                    np.mean([p.max_deviation for p in profiles])
                ),
                irc_maximum_at_ts_rate=float(
                    np.mean([p.maximum_at_ts for p in profiles])
                ),
            )
        )
    return stats
