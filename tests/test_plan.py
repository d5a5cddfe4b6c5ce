"""Pass settings resolved per device: the "auto" memory bound of training graphs."""

import pickle

import pytest
import torch

from schnetpack_hessian import Hessian
from schnetpack_hessian.plan import (
    CPU_RETAIN_MB,
    CUDA_RETAIN_FRACTION,
    PassSettings,
    auto_retain_bytes,
)

MIB = 2**20


def test_retain_mb_defaults_to_auto_and_is_256_mib_on_a_cpu(batch):
    settings = PassSettings()
    assert settings.retain_mb == "auto"
    assert settings.retain_bytes_on(torch.device("cpu")) == 256 * MIB
    assert CPU_RETAIN_MB == 256.0
    # decided when a graph is built; evaluation never asks
    assert settings.plan(batch, create_graph=True).retain_bytes == 256 * MIB
    assert settings.plan(batch, create_graph=False).retain_bytes is None


def test_auto_on_the_meta_device_follows_the_cpu_rule(batch):
    """A device without memory statistics (meta, ...) gets the CPU budget and never
    asks CUDA."""
    assert auto_retain_bytes(torch.device("meta")) == 256 * MIB
    on_meta = {key: value.to("meta") for key, value in batch.items()}
    plan = PassSettings().plan(on_meta, create_graph=True)
    assert plan.retain_bytes == 256 * MIB and plan.vectorize


@pytest.mark.parametrize(
    "retain_mb, expected",
    [(0.0, 0), (0.5, MIB // 2), (128, 128 * MIB), (None, None)],
)
def test_explicit_budgets_mean_the_same_on_every_device(retain_mb, expected):
    settings = PassSettings(retain_mb=retain_mb)
    for device in ("cpu", "meta"):
        assert settings.retain_bytes_on(device) == expected
    assert PassSettings(retain_mb="auto", memory_efficient=False).retain_bytes is None


@pytest.mark.parametrize("retain_mb", ["big", -1.0, True, float("nan"), float("inf")])
def test_bad_budgets_are_refused_with_the_choices(retain_mb):
    with pytest.raises(ValueError, match="'auto', None .* or a finite number >= 0"):
        PassSettings(retain_mb=retain_mb)


def test_settings_saved_with_a_number_keep_it():
    """Modules pickled with the earlier default (256.0) load with 256.0; 'auto' is
    pickled as the word and resolved where the module runs."""
    old = pickle.loads(pickle.dumps(Hessian(passes={"retain_mb": 256.0})))
    assert old.passes.retain_mb == 256.0
    new = pickle.loads(pickle.dumps(Hessian()))
    assert new.passes.retain_mb == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_auto_on_a_gpu_is_a_fraction_of_its_free_memory_read_once():
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    free, total = torch.cuda.mem_get_info(device)
    budget = auto_retain_bytes(device)
    assert 0 < budget <= CUDA_RETAIN_FRACTION * total
    block = torch.empty(64 * MIB, dtype=torch.uint8, device=device)
    # cached per device: the allocation since does not change it, no second read
    assert auto_retain_bytes(device) == budget
    assert PassSettings().retain_bytes_on(device) == budget
    assert block.numel() == 64 * MIB
