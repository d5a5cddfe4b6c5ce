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
from torch.utils.data import Sampler

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


class SizeBucketBatchSampler(Sampler[List[int]]):
    """Batches of dataset indices whose structures have similar atom counts.

    Per epoch: the structures of each bucket (``N // bucket_width``) are shuffled and
    cut into batches of at most ``batch_size``; the batches of all buckets are then
    shuffled together.  The order depends only on ``seed`` and the epoch, so runs are
    reproducible; Lightning's ``set_epoch`` is honoured, and without it each new
    iteration is the next epoch.

    Args:
        sizes: atom count of each structure ``(len(dataset),)``
            (see :func:`structure_sizes`).
        batch_size: most structures per batch.
        bucket_width: atom counts per bucket (1: every batch has one size).
        shuffle: shuffle within buckets and the order of batches.
        seed: seed of the shuffles.
        drop_last: drop each bucket's last, incomplete batch.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        bucket_width: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
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
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        self._epoch_set: Optional[int] = None

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next iteration (Lightning calls this)."""
        self._epoch_set = int(epoch)

    def batches(self, epoch: int) -> List[List[int]]:
        """The batches of one epoch (lists of dataset indices)."""
        rng = np.random.default_rng([self.seed, epoch])
        keys = self.sizes // self.bucket_width
        out: List[List[int]] = []
        for key in np.unique(keys):
            members = np.flatnonzero(keys == key)
            if self.shuffle:
                members = members[rng.permutation(len(members))]
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                if self.drop_last and len(batch) < self.batch_size:
                    continue
                out.append(batch.tolist())
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def __iter__(self) -> Iterator[List[int]]:
        if self._epoch_set is not None:
            self.epoch, self._epoch_set = self._epoch_set, None
        batches = self.batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        keys = self.sizes // self.bucket_width
        counts = np.unique(keys, return_counts=True)[1]
        if self.drop_last:
            return int((counts // self.batch_size).sum())
        return int(np.ceil(counts / self.batch_size).sum())
