"""Split strategies: random, by reaction, and the critical-point protocol.

All strategies follow SchNetPack's :class:`~schnetpack.data.SplittingStrategy`
interface (``split(dataset, num_train, num_val, num_test)`` → three index lists into
``dataset``), so they also work with a plain :class:`~schnetpack.data.AtomsDataModule`.
A size is an ``int`` (count), a ``float`` in ``[0, 1]`` (fraction) or ``None`` (all that
is left; at most one).  Sizes count structures for :class:`RandomStructureSplit` and
reactions for the strategies that split by reaction.
"""

import math
from typing import List, Optional, Sequence, Union

import numpy as np
from schnetpack.data import SplittingStrategy

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.validation import HessianDataError

__all__ = [
    "absolute_sizes",
    "dataset_labels",
    "RandomStructureSplit",
    "ReactionSplit",
    "CriticalPointSplit",
    "resolve_splitting",
]

Size = Optional[Union[int, float]]


def absolute_sizes(
    total: int, sizes: Sequence[Size], what: str = "structures"
) -> List[int]:
    """Turn counts, fractions and one ``None`` (the rest) into counts summing ≤ total.

    Raises:
        HessianDataError: more than one ``None``, a negative size, or too many requested.
    """
    out: List[Optional[int]] = []
    for s in sizes:
        if s is None or (not isinstance(s, float) and s < 0):
            out.append(None)
        elif isinstance(s, float) and 0.0 <= s <= 1.0:
            out.append(int(math.floor(s * total)))
        elif s < 0:
            raise HessianDataError(f"negative split size {s}")
        else:
            out.append(int(s))
    if out.count(None) > 1:
        raise HessianDataError(f"only one split size may be None, got {list(sizes)}")
    known = sum(s for s in out if s is not None)
    if known > total:
        raise HessianDataError(
            f"split sizes {list(sizes)} need {known} {what}, but only {total} are available"
        )
    return [total - known if s is None else s for s in out]


def dataset_labels(dataset, name: str) -> np.ndarray:
    """Per-structure label ``(len(dataset),)`` int64 of any SchNetPack dataset.

    Uses the fast ``labels`` method of this package's datasets, else reads every
    structure.

    Raises:
        HessianDataError: the dataset has no such label.
    """
    if hasattr(dataset, "labels"):
        return dataset.labels(name)
    if name not in dataset.available_properties:
        raise HessianDataError(f"the dataset has no {name!r} labels")
    return np.array(
        [
            int(p[name].reshape(-1)[0])
            for p in dataset.iter_properties(
                load_properties=[name], load_structure=False
            )
        ],
        dtype=np.int64,
    )


def _partition(
    population: np.ndarray, sizes: Sequence[int], rng: np.random.Generator
) -> List[np.ndarray]:
    perm = population[rng.permutation(len(population))]
    offsets = np.cumsum([0] + list(sizes))
    return [perm[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


class RandomStructureSplit(SplittingStrategy):
    """Random split of the structures (like SchNetPack's ``RandomSplit``, but seeded).

    Args:
        seed: seed of the permutation (``None``: fresh randomness).
    """

    def __init__(self, seed: Optional[int] = None):
        super().__init__()
        self.seed = seed

    def split(self, dataset, *split_sizes: Size) -> List[List[int]]:
        n = len(dataset)
        sizes = absolute_sizes(n, split_sizes)
        parts = _partition(np.arange(n), sizes, np.random.default_rng(self.seed))
        return [sorted(p.tolist()) for p in parts]


class ReactionSplit(SplittingStrategy):
    """Split by ``reaction`` label: all structures of a reaction land in one split.

    Structures with reaction ``-1`` (none) count as reactions of their own.

    Args:
        kinds: only structures of these ``kind`` labels take part (``None``: all).
        seed: seed of the permutation of reactions.
    """

    def __init__(
        self, kinds: Optional[Sequence[str]] = None, seed: Optional[int] = None
    ):
        super().__init__()
        self.kinds = None if kinds is None else tuple(kinds)
        self.seed = seed
        for k in self.kinds or ():
            if k not in P.KINDS:
                raise HessianDataError(f"unknown kind {k!r}, expected one of {P.KINDS}")

    def population(self, dataset) -> np.ndarray:
        """Indices of the structures taking part."""
        if self.kinds is None:
            return np.arange(len(dataset))
        codes = dataset_labels(dataset, P.kind)
        wanted = [P.KINDS.index(k) for k in self.kinds]
        return np.flatnonzero(np.isin(codes, wanted))

    def split(self, dataset, *split_sizes: Size) -> List[List[int]]:
        members = self.population(dataset)
        reactions = dataset_labels(dataset, P.reaction)[members]
        none = reactions < 0
        # give every structure without a reaction a group of its own
        reactions = reactions.copy()
        reactions[none] = reactions.max(initial=0) + 1 + np.arange(int(none.sum()))
        groups = np.unique(reactions)
        sizes = absolute_sizes(len(groups), split_sizes, what="reactions")
        parts = _partition(groups, sizes, np.random.default_rng(self.seed))
        return [sorted(members[np.isin(reactions, p)].tolist()) for p in parts]


class CriticalPointSplit(ReactionSplit):
    """The study's protocol: train/validate/test on critical points only.

    ``reactant``, ``product`` and ``ts`` structures are split (by reaction, or at random
    with ``by_reaction=False``); ``irc``, ``nms`` and ``other`` structures are in no split
    and serve as extrapolation test sets
    (:meth:`HessianDataModule.extrapolation_dataloader`).

    Args:
        by_reaction: keep each reaction in one split (sizes count reactions);
            else split structures at random (sizes count structures).
        seed: seed of the permutation.
    """

    def __init__(self, by_reaction: bool = True, seed: Optional[int] = None):
        super().__init__(kinds=P.CRITICAL_KINDS, seed=seed)
        self.by_reaction = by_reaction

    def split(self, dataset, *split_sizes: Size) -> List[List[int]]:
        if self.by_reaction:
            return super().split(dataset, *split_sizes)
        members = self.population(dataset)
        sizes = absolute_sizes(len(members), split_sizes)
        parts = _partition(members, sizes, np.random.default_rng(self.seed))
        return [sorted(p.tolist()) for p in parts]


_BY_NAME = {
    "random": RandomStructureSplit,
    "reaction": ReactionSplit,
    "critical": CriticalPointSplit,
}


def resolve_splitting(
    splitting: Union[str, SplittingStrategy, None], seed: Optional[int] = None
) -> SplittingStrategy:
    """Strategy from a name (``random``, ``reaction``, ``critical``) or instance."""
    if splitting is None:
        return RandomStructureSplit(seed)
    if isinstance(splitting, str):
        if splitting not in _BY_NAME:
            raise HessianDataError(
                f"unknown splitting {splitting!r}, expected one of {sorted(_BY_NAME)} or a "
                "SplittingStrategy"
            )
        return _BY_NAME[splitting](seed=seed)
    return splitting
