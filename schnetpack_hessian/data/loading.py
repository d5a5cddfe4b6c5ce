"""Data-loader settings that fit the device: worker processes and pinned memory.

On a CPU the training itself uses every core (torch's intra-op threads), and a worker
process per loader would compete with it for the cores it reads and builds neighbour
lists on, so the loader runs in the training process (``num_workers=0``) and pinning,
which only speeds host-to-GPU copies, is off.  On a GPU the step runs on the device and
the host is free: each rank gets ``min(4, cores per rank − 1)`` workers, so HDF5 reads
and neighbour lists of the next batches overlap the step, and pinned (page-locked)
batches, which the copy to the device reads without a staging buffer.
"""

import os
from typing import Tuple

__all__ = ["AUTO", "loader_defaults"]

#: the value of ``num_workers`` / ``pin_memory`` that asks for :func:`loader_defaults`
AUTO = "auto"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def loader_defaults(device_type: str, local_ranks: int = 1) -> Tuple[int, bool]:
    """``(num_workers, pin_memory)`` per data loader for training on ``device_type``
    (``"cpu"``, ``"cuda"``, ...) with ``local_ranks`` processes on this machine."""
    if device_type == "cpu":
        return 0, False
    per_rank = _cores() // max(1, int(local_ranks))
    return max(0, min(4, per_rank - 1)), device_type == "cuda"
