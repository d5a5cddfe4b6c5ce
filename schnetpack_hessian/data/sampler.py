"""Size-bucketed batches: molecules of similar size trained together.

A full-Hessian batch costs ``3·max(N) − 6`` seeded backward passes whatever the sizes
of its other molecules (:mod:`schnetpack_hessian.hessian`), so a batch mixing a
3-atom and a 20-atom molecule pays the 20-atom price for both.
:class:`SizeBucketBatchSampler` groups the training structures by atom count
(buckets of ``bucket_width`` sizes), cuts each bucket into batches and shuffles the
batches between epochs: every structure is seen exactly once per epoch, the loss of an
epoch is the same sum of per-structure terms as with plain shuffling; only which
structures share a batch changes.
"""

from typing import Iterator, List, Optional, Sequence

import numpy as np
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

import schnetpack.properties as spk_properties

__all__ = ["SizeBucketBatchSampler", "structure_sizes"]


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


class SizeBucketBatchSampler(BatchSampler):
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
        # BatchSampler.__init__ is not called: it requires a sampler and checks
        # nothing this class does not
        if batch_size < 1 or bucket_width < 1:
            raise ValueError(
                f"SizeBucketBatchSampler: batch_size and bucket_width must be ≥ 1, got "
                f"{batch_size} and {bucket_width}"
            )
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.bucket_width = int(bucket_width)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
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

    def _members(self) -> np.ndarray:
        """The dataset indices this sampler batches."""
        if self.sampler is None or self._distributed:
            return np.arange(len(self.sizes))
        return np.unique(np.fromiter(iter(self.sampler), dtype=np.int64))

    def batches(self, epoch: int) -> List[List[int]]:
        """All batches of one epoch (lists of dataset indices; every rank's share)."""
        seed = self.sampler.seed if self._distributed else self.seed
        rng = np.random.default_rng([seed, epoch])
        members = self._members()
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
        keys = self.sizes[self._members()] // self.bucket_width
        counts = np.unique(keys, return_counts=True)[1]
        if self.drop_last:
            n = int((counts // self.batch_size).sum())
        else:
            n = int(np.ceil(counts / self.batch_size).sum())
        if self._distributed:
            return -(-n // self.sampler.num_replicas)
        return n
