"""Hessian training under DistributedDataParallel (2 CPU processes, gloo): the
memory-efficient backward's gradients are all-reduced like any other."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from schnetpack_hessian import Hessian, HessianOutput, properties
from schnetpack_hessian.testing import (
    build_batch,
    graph_functions,
    make_potential,
    reference_molecules,
)

pytestmark = pytest.mark.integration


def shard_batches():
    mols = reference_molecules()
    return [build_batch(mols[:2]), build_batch(mols[2:])]


def targets(batch):
    n_blocks = int((batch["_n_atoms"] ** 2).sum())
    g = torch.Generator().manual_seed(n_blocks)
    return {
        properties.hessian: torch.randn(
            n_blocks, 3, 3, generator=g, dtype=torch.float64
        )
    }


def loss_of(model, batch):
    pred = model(dict(batch))
    loss = pred["forces"].pow(2).mean()
    if properties.hessian in pred:
        loss = loss + HessianOutput().calculate_loss(pred, targets(batch))
    return loss


#: pass settings under test: every graph kept, every graph recomputed in the backward,
#: and a budget that keeps the first chunk and recomputes the rest
PASSES = {
    "keep": {"chunk_size": 3, "memory_efficient": False},
    "recompute": {"chunk_size": 3, "retain_mb": 0.0},
    "split": {"chunk_size": 3, "retain_mb": 0.02},
}


def worker(rank, init_file, passes, out_file):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    hessian = Hessian(mode="full", passes=PASSES[passes])
    model = make_potential("painn", [hessian])
    # plain DDP does not all-reduce when forward calls autograd.grad (forces)
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    loss_of(ddp, shard_batches()[rank]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters()}, out_file)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("passes", list(PASSES))
def test_ddp_gradients_equal_the_single_process_average(passes, tmp_path):
    """DDP over two processes, whatever the memory bound, equals single-process
    training with every graph kept."""
    probe = make_potential("painn", [Hessian(mode="full", passes=PASSES[passes])])
    hessian = probe.train()(dict(shard_batches()[0]))[properties.hessian]
    assert ("_MemoryBoundedRowsBackward" in graph_functions(hessian)) == (
        passes != "keep"
    )
    out_file = tmp_path / "grads.pt"
    args = (str(tmp_path / "init"), passes, str(out_file))
    mp.spawn(worker, args=args, nprocs=2)
    ddp_grads = torch.load(out_file)
    model = make_potential("painn", [Hessian(mode="full", passes=PASSES["keep"])])
    total = sum(loss_of(model, b) for b in shard_batches()) / 2
    total.backward()
    for name, p in model.named_parameters():
        expected = p.grad if p.grad is not None else torch.zeros_like(p)
        got = ddp_grads[name] if ddp_grads[name] is not None else torch.zeros_like(p)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
