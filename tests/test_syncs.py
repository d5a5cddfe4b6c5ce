"""The host-synchronisation counter: what it counts, on host and on device tensors."""

import pytest
import torch

from schnetpack_hessian.syncs import SyncCounter, count_syncs, deliberate


def kinds(counter):
    return [e.kind for e in counter.events]


READS = [
    ("item", lambda x: x.sum().item()),
    ("bool", lambda x: bool(x.sum() > 0)),
    ("int", lambda x: int(x[0])),
    ("float", lambda x: float(x[1])),
    ("index", lambda x: list(range(10))[x.long()[2]]),
    ("tolist", lambda x: x.tolist()),
    ("copy to host", lambda x: x.cpu()),
    ("copy to host", lambda x: x.to("cpu")),
    ("boolean mask indexing", lambda x: x[x > 2]),
    ("nonzero", lambda x: torch.nonzero(x)),
    ("unique", lambda x: torch.unique(x)),
    ("repeat_interleave without output_size", lambda x: x.long().repeat_interleave(x.long())),
    ("where (one argument)", lambda x: torch.where(x > 1)),
    ("linalg_eigh", lambda x: torch.linalg.eigh(torch.eye(3, device=x.device) * x[1])),
]  # fmt: skip


@pytest.mark.parametrize(
    "kind, call", READS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(READS)]
)
def test_reads_of_device_values_are_counted_and_host_values_are_not(kind, call):
    """Simulating a GPU on the CPU: tensors from outside the counter (e.g. a batch
    already on the device) are device tensors, marked ones are host tensors."""
    device = torch.arange(4.0)
    host = torch.arange(4.0)
    with SyncCounter(simulate=True) as counter:
        counter.mark_host(host)
        call(host)
        assert counter.events == []
        call(device)
    assert kinds(counter) == [kind]
    assert counter.events[0].origin == "other" and counter.events[0].counts
    assert "test_syncs.py" in counter.events[0].where


def test_host_is_what_comes_from_host_tensors_or_factories_without_a_device():
    device = torch.arange(3)
    with SyncCounter(simulate=True) as counter:
        sizes = torch.tensor([3, 5, 2])  # no device: a host tensor
        total = int(sizes.sum())  # host arithmetic: free
        on_device = torch.arange(total, device=device.device)
        like = device.new_zeros(2)
        assert counter.events == []
        int(on_device[0]), int(like[0])
    assert kinds(counter) == ["int", "int"]


def test_transfers_to_the_device_block_unless_non_blocking():
    device = torch.arange(3)
    with SyncCounter(simulate=True) as counter:
        host = torch.arange(3)
        moved = host.to(device.device, non_blocking=True)
        assert counter.events == [] and moved is not host
        host.to(device.device)
        torch.tensor([1.0, 2.0], device=device.device)
        torch.full((2,), 1.0, device=device.device)  # a fill kernel, no copy
        int(moved[0])
    assert kinds(counter) == [
        "blocking copy to device",
        "blocking copy to device",
        "int",
    ]


def test_output_sizes_given_on_the_host_do_not_count():
    device = torch.tensor([2, 3])
    with SyncCounter(simulate=True) as counter:
        torch.repeat_interleave(
            torch.arange(2, device=device.device), device, output_size=5
        )
        device.repeat_interleave(2)
    assert counter.events == []


def test_host_tensors_in_device_operations_are_reported():
    device = torch.ones(3)
    with SyncCounter(simulate=True) as counter:
        host = torch.ones(3)
        device + host
        device * torch.tensor(2.0)  # a host scalar is fine
    assert kinds(counter) == ["mixed"]


def log_metrics(x):
    return x.sum().item()


def test_logging_and_deliberate_syncs_are_labelled_and_not_counted():
    x = torch.ones(2)
    with SyncCounter(simulate=True) as counter:
        log_metrics(x)
        with deliberate("non-finite loss guard"):
            bool(torch.isfinite(x).all())
        x.sum().item()
    logged, guarded, plain = counter.events
    assert logged.logging and not logged.counts
    assert guarded.deliberate == "non-finite loss guard" and not guarded.counts
    assert plain.counts and counter.counted() == [plain]
    assert list(counter.summary()) == [f"item (item) at {plain.where}"]


def test_on_a_real_device_cpu_tensors_are_the_host_tensors():
    x = torch.arange(3)
    with count_syncs(simulate=False) as counter:
        x.sum().item(), x.tolist(), x[x > 1]
    assert counter.events == []
    if torch.cuda.is_available():
        with count_syncs(simulate=False) as counter:
            x.cuda().sum().item()
        assert kinds(counter) == ["blocking copy to device", "item"]
