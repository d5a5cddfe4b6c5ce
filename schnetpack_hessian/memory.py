"""Host memory of this process: the resident-set high-water mark."""

from typing import Optional

__all__ = ["rss_high_water_mb"]


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
