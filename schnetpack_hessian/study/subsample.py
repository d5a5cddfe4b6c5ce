"""Scoring on a subsample: which test structures a run is scored on.

A bulk-set fold holds thousands of IRC/NMS structures, and scoring a run on all of
them (exact model Hessians, eigen-solves) costs more than training it on a CPU.  The
subsample keeps every critical point (reactant, product, TS: barriers and TS searches
need all of them) and draws ``n_max`` of the other structures stratified by reaction
and kind, proportionally, with a seed that depends on the fold only, so every arm of a
fold is scored on the same structures (paired comparisons).
"""

from typing import List, Sequence

import numpy as np

from schnetpack_hessian import properties as P

__all__ = ["scored_subset"]

#: Added to the fold to seed the draw (independent of training seeds).
SUBSAMPLE_SEED = 1000


def scored_subset(
    indices: Sequence[int],
    kinds: np.ndarray,
    reactions: np.ndarray,
    n_max: int,
    fold: int,
) -> List[int]:
    """Every critical point of ``indices`` and at most ``n_max`` of the others,
    stratified by (reaction, kind).

    Args:
        indices: the test set (indices into the data file).
        kinds: kind code per structure ``(n,)`` (index into ``properties.KINDS``).
        reactions: reaction id per structure ``(n,)``.
        n_max: structures other than critical points to keep (``<= 0``: all).
        fold: the run's fold (seeds the draw).

    Returns:
        The kept indices, sorted.
    """
    indices = np.asarray(sorted(indices), dtype=np.int64)
    critical_codes = [P.KINDS.index(k) for k in P.CRITICAL_KINDS]
    critical = np.isin(kinds[indices], critical_codes)
    keep = list(indices[critical])
    others = indices[~critical]
    if n_max <= 0 or len(others) <= n_max:
        return indices.tolist()
    rng = np.random.default_rng(SUBSAMPLE_SEED + fold)
    strata = {}
    for i in others:
        strata.setdefault((int(reactions[i]), int(kinds[i])), []).append(int(i))
    keys = sorted(strata)
    sizes = np.array([len(strata[k]) for k in keys], dtype=float)
    quota = sizes * n_max / sizes.sum()
    counts = np.floor(quota).astype(int)
    # largest remainders get the structures the floors left over
    for j in np.argsort(-(quota - counts), kind="stable")[: n_max - counts.sum()]:
        counts[j] += 1
    for key, count in zip(keys, counts):
        if count:
            keep += rng.choice(strata[key], size=count, replace=False).tolist()
    return sorted(int(i) for i in keep)
