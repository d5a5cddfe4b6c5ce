"""Size-bucketed batches: molecules of similar size trained together.

A full-Hessian batch costs ``3·max(N) − 6`` seeded backward passes whatever the sizes
of its other molecules (:mod:`schnetpack_hessian.hessian`), so a batch mixing a
3-atom and a 20-atom molecule pays the 20-atom price for both.
:class:`SizeBucketBatchSampler` groups the training structures by atom count
(buckets of ``bucket_width`` sizes), cuts each bucket into batches and shuffles the
batches between epochs: every structure is seen exactly once per epoch, the loss of an
epoch is the same sum of per-structure terms as with plain shuffling; only which
structures share a batch changes.

:class:`MixBatchSampler` co-trains scarce Hessian data with plentiful energy/force
data at a chosen ratio (as PFT trains one Hessian column per structure 4:1 with E/F
data): every batch holds the two populations of the training split, structures with
and without a Hessian, in the ratio of ``mix``, each population cycling through its
own shuffles.
"""

from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

import schnetpack.properties as spk_properties

from schnetpack_hessian import properties

__all__ = [
    "MixBatchSampler",
    "SizeBucketBatchSampler",
    "structure_has_hessian",
    "structure_sizes",
]

#: Populations of :class:`MixBatchSampler` (keys of ``data.mix``).
MIX_POPULATIONS = ("hessian", "ef_only")


def structure_sizes(dataset) -> np.ndarray:
    """Atom count of every structure of a SchNetPack dataset ``(len(dataset),)`` int64.

    Reads one small property per structure (no neighbour lists, no transforms).
    """
    available = list(getattr(dataset, "available_properties", []))
    cheap = [available[0]] if available else None
    return np.array(
        [
            int(p[spk_properties.n_atoms].reshape(-1)[0])
            for p in dataset.iter_properties(
                load_properties=cheap, load_structure=False
            )
        ],
        dtype=np.int64,
    )


def structure_has_hessian(dataset) -> np.ndarray:
    """Whether each structure of a SchNetPack dataset has a Hessian (not all-NaN),
    ``(len(dataset),)`` bool; all False when the file holds no Hessians."""
    if properties.hessian not in list(getattr(dataset, "available_properties", [])):
        return np.zeros(len(dataset), dtype=bool)
    return np.array(
        [
            not bool(np.isnan(np.asarray(p[properties.hessian])).all())
            for p in dataset.iter_properties(
                load_properties=[properties.hessian], load_structure=False
            )
        ],
        dtype=bool,
    )


class _EpochBatchSampler(BatchSampler):
    """Batches that depend only on a seed and the epoch, shared out among DDP ranks.

    ``set_epoch`` is honoured, and without it each new iteration is the next epoch.
    Under DDP, Lightning rebuilds the sampler with a ``DistributedSampler`` as
    ``sampler``: every rank then draws the same epoch of batches (seeded by the
    distributed sampler's seed and epoch) and takes every ``num_replicas``-th batch
    from its rank on, so the ranks get disjoint batches whose union is the epoch.
    Subclasses give :meth:`batches` and :meth:`_n_batches`.
    """

    def _init_epochs(self, seed: int, sampler: Optional[Sampler]) -> None:
        # BatchSampler.__init__ is not called: it requires a sampler and checks
        # nothing these classes do not
        self.seed = int(seed)
        self.sampler = sampler
        self.epoch = 0
        self._epoch_set: Optional[int] = None

    @property
    def _distributed(self) -> bool:
        return isinstance(self.sampler, DistributedSampler)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next iteration."""
        self._epoch_set = int(epoch)
        if self._distributed:
            self.sampler.set_epoch(epoch)

    def _members(self, n: int) -> np.ndarray:
        """The dataset indices this sampler batches (of ``n``)."""
        if self.sampler is None or self._distributed:
            return np.arange(n)
        return np.unique(np.fromiter(iter(self.sampler), dtype=np.int64))

    def _rng(self, epoch: int) -> np.random.Generator:
        seed = self.sampler.seed if self._distributed else self.seed
        return np.random.default_rng([seed, epoch])

    def batches(self, epoch: int) -> List[List[int]]:
        raise NotImplementedError

    def _n_batches(self) -> int:
        raise NotImplementedError

    def _share(self, batches: List[List[int]]) -> List[List[int]]:
        """This rank's batches: equally many on every rank, disjoint where possible."""
        ranks, rank = self.sampler.num_replicas, self.sampler.rank
        batches = list(batches)
        while len(batches) % ranks:
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            batch = batches[largest]
            if len(batch) < 2:
                break
            half = (len(batch) + 1) // 2
            batches[largest : largest + 1] = [batch[:half], batch[half:]]
        if len(batches) % ranks:  # fewer structures than ranks: repeat, as torch does
            short = ranks - len(batches) % ranks
            batches += (batches * ranks)[:short]
        return batches[rank::ranks]

    def _epoch(self) -> int:
        if self._distributed:
            return int(self.sampler.epoch)
        if self._epoch_set is not None:
            self.epoch, self._epoch_set = self._epoch_set, None
        epoch = self.epoch
        self.epoch += 1
        return epoch

    def __iter__(self) -> Iterator[List[int]]:
        batches = self.batches(self._epoch())
        if self._distributed:
            batches = self._share(batches)
        return iter(batches)

    def __len__(self) -> int:
        n = self._n_batches()
        if self._distributed:
            return -(-n // self.sampler.num_replicas)
        return n


class SizeBucketBatchSampler(_EpochBatchSampler):
    """Batches of dataset indices whose structures have similar atom counts.

    Per epoch: the structures of each bucket (``N // bucket_width``) are shuffled and
    cut into batches of at most ``batch_size``; the batches of all buckets are then
    shuffled together.  The order depends only on the seed and the epoch, so runs are
    reproducible; ``set_epoch`` is honoured, and without it each new iteration is the
    next epoch.

    Under DDP, Lightning rebuilds this sampler with a ``DistributedSampler`` as
    ``sampler`` (it is a ``BatchSampler`` with a ``sampler`` argument).  Every rank then
    draws the same epoch of batches (seeded by the distributed sampler's seed, which
    all ranks share, and its epoch) and takes every ``num_replicas``-th batch from its
    rank on: the ranks get disjoint batches whose union is the epoch.  Ranks must run
    equally many steps, so when the number of batches does not divide by the number
    of ranks the largest batches are halved (both halves keep one bucket) until it
    does; only an epoch with fewer structures than ranks repeats batches.

    Args:
        sizes: atom count of each structure ``(len(dataset),)``
            (see :func:`structure_sizes`).
        batch_size: most structures per batch.
        bucket_width: atom counts per bucket (1: every batch has one size).
        shuffle: shuffle within buckets and the order of batches.
        seed: seed of the shuffles (without a distributed sampler).
        drop_last: drop each bucket's last, incomplete batch.
        sampler: None (every structure), a ``DistributedSampler`` (this rank's share
            of the batches, above), or any sampler whose indices are the structures
            to batch (their order is not used).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        bucket_width: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        sampler: Optional[Sampler] = None,
    ):
        if batch_size < 1 or bucket_width < 1:
            raise ValueError(
                f"SizeBucketBatchSampler: batch_size and bucket_width must be ≥ 1, got "
                f"{batch_size} and {bucket_width}"
            )
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.bucket_width = int(bucket_width)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._init_epochs(seed, sampler)

    def batches(self, epoch: int) -> List[List[int]]:
        """All batches of one epoch (lists of dataset indices; every rank's share)."""
        rng = self._rng(epoch)
        members = self._members(len(self.sizes))
        keys = self.sizes[members] // self.bucket_width
        out: List[List[int]] = []
        for key in np.unique(keys):
            bucket = members[keys == key]
            if self.shuffle:
                bucket = bucket[rng.permutation(len(bucket))]
            for start in range(0, len(bucket), self.batch_size):
                batch = bucket[start : start + self.batch_size]
                if self.drop_last and len(batch) < self.batch_size:
                    continue
                out.append(batch.tolist())
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def _n_batches(self) -> int:
        keys = self.sizes[self._members(len(self.sizes))] // self.bucket_width
        counts = np.unique(keys, return_counts=True)[1]
        if self.drop_last:
            return int((counts // self.batch_size).sum())
        return int(np.ceil(counts / self.batch_size).sum())


class MixBatchSampler(_EpochBatchSampler):
    """Batches with structures with and without a Hessian in a fixed ratio.

    ``mix={"hessian": 1, "ef_only": 4}`` puts ``round(B/5)`` structures with a
    Hessian (at least one) and the rest without into every batch of ``B``.  An
    epoch has enough batches that every structure is drawn at least once; each
    population is drawn from its own shuffles, reshuffled whenever it runs out, so
    the population the ratio favours beyond its share is revisited within an epoch.
    The order depends only on the seed and the epoch (DDP: see the base class).

    Args:
        has_hessian: whether each structure has a Hessian ``(len(dataset),)``
            (:func:`structure_has_hessian`).
        mix: weights of the populations ``hessian`` and ``ef_only``.
        batch_size: structures per batch (at least 2).
        seed: seed of the shuffles (without a distributed sampler).
        sampler: None, a ``DistributedSampler`` or a sampler of the members.

    Raises:
        ValueError: unknown or negative weights, a batch too small for the ratio,
            or a population the ratio asks for that the data do not have.
    """

    def __init__(
        self,
        has_hessian: Sequence[bool],
        mix: Dict[str, float],
        batch_size: int,
        seed: int = 0,
        sampler: Optional[Sampler] = None,
    ):
        unknown = sorted(set(mix) - set(MIX_POPULATIONS))
        weights = {k: float(mix.get(k, 0.0)) for k in MIX_POPULATIONS}
        if unknown or min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(
                f"MixBatchSampler: mix must give non-negative weights of "
                f"{list(MIX_POPULATIONS)}, not all zero; got {dict(mix)}"
            )
        if batch_size < 2:
            raise ValueError(
                f"MixBatchSampler: batch_size must be ≥ 2 to mix, got {batch_size}"
            )
        self.has_hessian = np.asarray(has_hessian, dtype=bool)
        self.mix = weights
        self.batch_size = int(batch_size)
        self._init_epochs(seed, sampler)
        share = weights["hessian"] / sum(weights.values())
        n_hessian = int(round(self.batch_size * share))
        if weights["hessian"] > 0:
            n_hessian = max(n_hessian, 1)
        if weights["ef_only"] > 0:
            n_hessian = min(n_hessian, self.batch_size - 1)
        #: structures with a Hessian per batch (the rest have none)
        self.n_hessian = n_hessian
        for name, population, per_batch in self._populations():
            if per_batch and not len(population):
                raise ValueError(
                    f"MixBatchSampler: mix {dict(mix)} asks for {per_batch} '{name}' "
                    "structures per batch, but the training split has none"
                )

    def _populations(self):
        """``(name, member indices, structures per batch)`` of the two populations."""
        members = self._members(len(self.has_hessian))
        with_hessian = self.has_hessian[members]
        return (
            ("hessian", members[with_hessian], self.n_hessian),
            ("ef_only", members[~with_hessian], self.batch_size - self.n_hessian),
        )

    @staticmethod
    def _count(populations) -> int:
        """Enough batches that every structure is drawn at least once."""
        return max(
            -(-len(population) // per_batch)
            for _, population, per_batch in populations
            if per_batch
        )

    def _n_batches(self) -> int:
        return self._count(self._populations())

    def batches(self, epoch: int) -> List[List[int]]:
        """All batches of one epoch (lists of dataset indices; every rank's share)."""
        rng = self._rng(epoch)
        populations = self._populations()
        n_batches = self._count(populations)
        draws = []
        for _, population, per_batch in populations:
            needed = n_batches * per_batch
            stream = np.concatenate(
                [
                    rng.permutation(population)
                    for _ in range(-(-needed // max(len(population), 1)))
                ]
                or [np.zeros(0, dtype=np.int64)]
            )[:needed]
            draws.append(stream.reshape(n_batches, per_batch))
        return [
            np.concatenate([draws[0][b], draws[1][b]]).tolist()
            for b in range(n_batches)
        ]
