"""Memory readers take the device they measure (never the current CUDA device)."""

import pytest
import torch

from schnetpack_hessian.memory import (
    peak_memory_mb,
    reset_peak_memory,
    rss_high_water_mb,
    synchronize,
)
from schnetpack_hessian.testing import device_params


@pytest.mark.parametrize("device", device_params(meta=True))
def test_peak_memory_reads_the_given_device(device):
    target = torch.device(device)
    if target.type == "cuda":  # the last device: not the current one with two GPUs
        target = torch.device("cuda", torch.cuda.device_count() - 1)
    reset_peak_memory(target)
    block = torch.ones(8 * 2**20, dtype=torch.float32, device=target)  # 32 MiB
    synchronize(target)
    assert block.shape == (8 * 2**20,)
    peak, kind = peak_memory_mb(target)
    expected = {"cpu": "process_peak_rss", "cuda": "cuda_allocated"}
    assert kind == expected.get(target.type, "unavailable")
    if target.type == "meta":
        assert peak is None
    elif target.type == "cuda":
        assert peak >= 32
        del block
        reset_peak_memory(target)
        assert peak_memory_mb(target)[0] < 32  # the reset was that device's
    else:
        assert peak >= 32 and peak == pytest.approx(rss_high_water_mb(), abs=64)
