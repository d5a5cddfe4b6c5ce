"""The study's protocol as index sets: by-reaction folds, critical points to train on.

Reactions are dealt into ``k`` folds once (fixed seed, independent of the run), so each
reaction is tested exactly once over the folds.  For a run on fold ``f``:

- train / validation: the critical points (reactant, product, ts) of the other
  folds' reactions; a seeded ``val_fraction`` of them validate (early stopping, LR
  schedule), a nested seeded ``fraction`` of the rest train;
- test (a) ``train_offpath``: the IRC and NMS structures of the training reactions;
- test (b) ``heldout``: every structure of fold ``f``'s reactions.

Nothing of fold ``f`` is seen in training or validation.
"""

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.splitting import data_identity, save_split

__all__ = ["RunSplit", "reaction_folds", "make_split", "write_split_file"]

#: Seed of the deal of reactions into folds (the same for every run of a study).
FOLD_SEED = 0


@dataclass(frozen=True)
class RunSplit:
    """Index sets of one run (indices into the data file).

    Attributes:
        train: training critical points.
        val: validation critical points (training reactions).
        train_offpath: IRC/NMS structures of the training reactions (test set a).
        heldout: every structure of the held-out reactions (test set b).
        heldout_reactions: the held-out reaction ids.
    """

    train: List[int]
    val: List[int]
    train_offpath: List[int]
    heldout: List[int]
    heldout_reactions: List[int]

    def heldout_critical(self, kinds: np.ndarray) -> List[int]:
        """The held-out structures that are critical points (spktrain's test split)."""
        critical = [P.KINDS.index(k) for k in P.CRITICAL_KINDS]
        return [i for i in self.heldout if kinds[i] in critical]


def reaction_folds(reactions: np.ndarray, n_folds: int) -> List[np.ndarray]:
    """Deal the reaction ids into ``n_folds`` folds of near-equal size.

    Args:
        reactions: reaction id per structure ``(n,)``; ids < 0 (none) are not dealt.

    Raises:
        ValueError: fewer reactions than folds, or fewer than 2 folds.
    """
    ids = np.unique(reactions[reactions >= 0])
    if n_folds < 2 or len(ids) < n_folds:
        raise ValueError(
            f"reaction_folds: {len(ids)} reactions cannot make {n_folds} folds "
            "(need at least 2 folds and one reaction per fold)"
        )
    ids = ids[np.random.default_rng(FOLD_SEED).permutation(len(ids))]
    return [np.sort(f) for f in np.array_split(ids, n_folds)]


def make_split(
    kinds: np.ndarray,
    reactions: np.ndarray,
    n_folds: int,
    fold: Optional[int],
    seed: int,
    fraction: float = 1.0,
    val_fraction: float = 0.15,
    val_per_reaction: int = 0,
) -> RunSplit:
    """The index sets of the run on ``fold`` with ``seed``.

    Args:
        kinds: kind code per structure (index into :data:`properties.KINDS`) ``(n,)``.
        reactions: reaction id per structure ``(n,)``.
        n_folds: number of by-reaction folds.
        fold: the held-out fold (``None``: no reaction held out, as for a model
            trained on every reaction).
        seed: draws the validation points and the training subset.
        fraction: fraction of the remaining training critical points used (the
            subsets of one seed are nested: 12.5 % ⊂ 25 % ⊂ ...).
        val_fraction: fraction of the training reactions' critical points that
            validate (at least one).
        val_per_reaction: at most this many critical points of one reaction
            validate (0: no limit), so that no training reaction gives most of its
            critical points to validation; the draw is the same seeded order,
            skipping points of reactions that have given their share.

    Raises:
        ValueError: too few critical points for a train and a validation set, or
            too few reactions for ``val_per_reaction``.
    """
    held = (
        np.array([], dtype=np.int64)
        if fold is None
        else reaction_folds(reactions, n_folds)[fold]
    )
    critical = np.isin(kinds, [P.KINDS.index(k) for k in P.CRITICAL_KINDS])
    in_held = np.isin(reactions, held)
    in_train = (reactions >= 0) & ~in_held
    pool = np.flatnonzero(critical & in_train)
    if len(pool) < 2:
        raise ValueError(
            f"make_split: fold {fold} leaves {len(pool)} training critical points; "
            "need at least 2 (one to train, one to validate)"
        )
    rng = np.random.default_rng([seed] if fold is None else [seed, fold])
    pool = pool[rng.permutation(len(pool))]
    n_val = max(1, int(round(val_fraction * len(pool))))
    if val_per_reaction:
        val, rest = _capped_draw(pool, reactions, n_val, val_per_reaction, fold)
    else:
        val, rest = pool[:n_val], pool[n_val:]
    n_train = max(1, math.ceil(fraction * len(rest) - 1e-9))
    return RunSplit(
        train=sorted(rest[:n_train].tolist()),
        val=sorted(val.tolist()),
        train_offpath=np.flatnonzero(~critical & in_train).tolist(),
        heldout=np.flatnonzero(in_held).tolist(),
        heldout_reactions=held.tolist(),
    )


def _capped_draw(
    pool: np.ndarray, reactions: np.ndarray, n_val: int, cap: int, fold: int
) -> Tuple[np.ndarray, np.ndarray]:
    """The first ``n_val`` points of ``pool`` (in order) whose reaction has given
    fewer than ``cap`` points, and the rest of ``pool`` in its order."""
    given: Counter = Counter()
    val: List[int] = []
    for i in pool:
        if len(val) == n_val:
            break
        if given[reactions[i]] < cap:
            val.append(int(i))
            given[reactions[i]] += 1
    if len(val) < n_val:
        raise ValueError(
            f"make_split: fold {fold} has too few training reactions for {n_val} "
            f"validation points at most {cap} per reaction"
        )
    chosen = set(val)
    rest = np.array([i for i in pool if int(i) not in chosen], dtype=pool.dtype)
    return np.array(val, dtype=pool.dtype), rest


def write_split_file(
    split: RunSplit, test: List[int], path: Path, data_path: Path, n_structures: int
) -> Path:
    """Write the split in :class:`~schnetpack_hessian.data.HessianDataModule`'s format
    (``train_idx``, ``val_idx``, ``test_idx``), atomically, with the record that ties
    it to its data file (:func:`~schnetpack_hessian.data.splitting.save_split`; the
    data module accepts it for this data file only, whatever its strategy).

    Args:
        split: the run's index sets.
        test: spktrain's test indices.
        path: the ``.npz`` file.
        data_path: the data file the indices point into.
        n_structures: its number of structures.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_split(
        path,
        {"train_idx": split.train, "val_idx": split.val, "test_idx": test},
        data_identity(data_path, n_structures),
        {"class": "spkhess-study", "params": {"n_heldout": len(split.heldout)}},
        written_by="spkhess-study",
    )
