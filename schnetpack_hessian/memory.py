"""Memory of this process and of the device it measures, for timings and peaks.

Every reader takes the device measured: a CUDA reading (peak statistics, the
synchronisation that ends a timed call) concerns that device, never whichever CUDA
device happens to be the current one.  On a CPU the peak is the process's resident-set
high-water mark.
"""

from typing import Optional, Tuple, Union

import torch

__all__ = [
    "rss_high_water_mb",
    "reset_peak_memory",
    "peak_memory_mb",
    "synchronize",
    "PEAK_KINDS",
]

#: What :func:`peak_memory_mb` reads, by device type (other types: ``"unavailable"``).
PEAK_KINDS = {"cuda": "cuda_allocated", "cpu": "process_peak_rss"}

Device = Union[str, torch.device]


def rss_high_water_mb() -> Optional[float]:
    """``VmHWM`` of this process in MiB (reset by ``exec`` and by writing ``5`` to
    ``/proc/self/clear_refs``, unlike ``ru_maxrss``); None without ``/proc``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _ru_maxrss_mb() -> float:
    """Peak resident set size since the process started (``ru_maxrss``), MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_memory(device: Device) -> None:
    """Start a new peak of ``device``: its CUDA allocator's statistics (nothing to do
    on a CPU, whose peak :func:`peak_memory_mb` reads since the process started)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: Device) -> Tuple[Optional[float], str]:
    """The peak memory of ``device`` in MiB and what was read (:data:`PEAK_KINDS`).

    CUDA: ``max_memory_allocated`` of that device since :func:`reset_peak_memory`;
    CPU: the process's resident-set high-water mark (``VmHWM``, else ``ru_maxrss``);
    other device types (``meta``, ...): ``(None, "unavailable")``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, PEAK_KINDS["cuda"]
    if device.type == "cpu":
        peak = rss_high_water_mb()
        return (peak if peak is not None else _ru_maxrss_mb()), PEAK_KINDS["cpu"]
    return None, "unavailable"


def synchronize(device: Device) -> None:
    """Wait for the work queued on ``device`` (a CUDA device; no-op elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
