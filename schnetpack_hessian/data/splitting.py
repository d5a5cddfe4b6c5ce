"""Split strategies: random, by reaction, and the critical-point protocol.

All strategies follow SchNetPack's :class:`~schnetpack.data.SplittingStrategy`
interface (``split(dataset, num_train, num_val, num_test)`` → three index lists into
``dataset``), so they also work with a plain :class:`~schnetpack.data.AtomsDataModule`.
A size is an ``int`` (count), a ``float`` in ``[0, 1]`` (fraction) or ``None`` (all that
is left; at most one).  Sizes count structures for :class:`RandomStructureSplit` and
reactions for the strategies that split by reaction.

A split file (``.npz``, SchNetPack's ``train_idx``/``val_idx``/``test_idx``) is tied
to its data: :func:`save_split` stores, next to the indices, a record of the data
file it was drawn for (name, size, SHA-256 of its content, number of structures) and
of the strategy that drew it (class and parameters); :func:`check_split_record`
refuses the file for any other data, or for another strategy, saying why.
"""

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from schnetpack.data import SplittingStrategy

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.validation import HessianDataError
from schnetpack_hessian.files import file_sha256

__all__ = [
    "SPLIT_RECORD",
    "absolute_sizes",
    "data_identity",
    "strategy_record",
    "save_split",
    "check_split_record",
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


#: Key of the JSON record (data identity and strategy) inside a split file.
SPLIT_RECORD = "split_record"
#: ``written_by`` of split files drawn by :class:`~.datamodule.HessianDataModule`.
DATAMODULE = "HessianDataModule"


def data_identity(path: Union[str, Path], n_structures: int) -> Dict[str, Any]:
    """What identifies a data file: name, size, SHA-256 of the content, structures.

    Args:
        path: the data file (``.h5``/``.db``).
        n_structures: its number of structures.

    Returns:
        ``{"file", "size", "sha256", "n_structures"}`` (hashing reads the file once:
        ~0.1 s for 30 MB).
    """
    return {
        "file": os.path.abspath(path),
        "size": os.path.getsize(path),
        "sha256": file_sha256(path),
        "n_structures": int(n_structures),
    }


def _plain(value: Any) -> Any:
    """JSON stand-in of a parameter: arrays as lists, other objects by their repr
    without memory addresses (so that the record is the same in every process)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_plain))


def strategy_record(strategy: Any) -> Dict[str, Any]:
    """A strategy's class and parameters, e.g. ``{"class":
    "schnetpack_hessian.data.splitting.CriticalPointSplit", "params": {"by_reaction":
    false, "kinds": ["reactant", "product", "ts"], "seed": 0}}``."""
    cls = type(strategy)
    params = {k: v for k, v in sorted(vars(strategy).items()) if not k.startswith("_")}
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "params": _jsonable(params),
    }


def _describe(strategy: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in strategy.get("params", {}).items())
    return f"{strategy.get('class', '?').rsplit('.', 1)[-1]}({params})"


def save_split(
    path: Union[str, Path],
    indices: Mapping[str, Sequence[int]],
    data: Mapping[str, Any],
    strategy: Mapping[str, Any],
    written_by: str = DATAMODULE,
) -> Path:
    """Write a split file atomically with its record.

    Args:
        path: ``.npz`` file.
        indices: ``{"train_idx": ..., "val_idx": ..., "test_idx": ..., ...}``.
        data: :func:`data_identity` of the data file.
        strategy: :func:`strategy_record` of the strategy that drew the split.
        written_by: who drew it; files not drawn by the data module (the study's,
            whose index sets are given) are checked for their data only.

    Returns:
        ``path``.
    """
    from schnetpack_hessian.data.io import atomic_output

    path = Path(path)
    record = {"data": dict(data), "strategy": dict(strategy), "written_by": written_by}
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in indices.items()}
    arrays[SPLIT_RECORD] = np.array(json.dumps(record))
    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def check_split_record(
    split_file: Union[str, Path],
    split: Mapping[str, Any],
    data: Mapping[str, Any],
    strategy: Optional[Mapping[str, Any]],
):
    """Refuse a split file drawn for other data or by another strategy.

    Args:
        split_file: the file (for messages).
        split: its arrays (``np.load``).
        data: :func:`data_identity` of the data file in use.
        strategy: :func:`strategy_record` of the strategy in use.

    Raises:
        HessianDataError: the file has no record (an earlier version wrote it), or
            its data or strategy differ; the message says how to draw a new split.
    """
    again = (
        f"delete {split_file} (or point split_file elsewhere) to draw a new split for "
        f"{data['file']}"
    )
    if SPLIT_RECORD not in split:
        raise HessianDataError(
            f"{split_file}: the split file does not record which data file and split "
            f"strategy it was drawn for (written by an earlier version); {again}"
        )
    record = json.loads(str(split[SPLIT_RECORD]))
    drawn = record.get("data", {})
    if (drawn.get("sha256"), drawn.get("n_structures")) != (
        data["sha256"],
        data["n_structures"],
    ):
        raise HessianDataError(
            f"{split_file}: the split was drawn for {drawn.get('file')} "
            f"({drawn.get('n_structures')} structures, sha256 "
            f"{str(drawn.get('sha256'))[:12]}), not for {data['file']} "
            f"({data['n_structures']} structures, sha256 {data['sha256'][:12]}); "
            f"{again}"
        )
    if record.get("written_by") != DATAMODULE or strategy is None:
        return
    if _jsonable(record.get("strategy")) != _jsonable(strategy):
        raise HessianDataError(
            f"{split_file}: the split was drawn by "
            f"{_describe(record.get('strategy', {}))}, but the data module splits by "
            f"{_describe(strategy)}; {again}"
        )
