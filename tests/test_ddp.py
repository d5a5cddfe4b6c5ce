"""Hessian training under DistributedDataParallel (2 CPU processes, gloo): the
memory-efficient backward's gradients are all-reduced like any other."""

import pytest
import torch
import torch.distributed as dist

from schnetpack_hessian import Hessian, HessianOutput, properties
from schnetpack_hessian.testing import (
    build_batch,
    graph_functions,
    join_gloo_group,
    make_potential,
    reference_molecules,
    spawn_ranks,
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
    join_gloo_group(init_file, rank)
    hessian = Hessian(mode="full", passes=PASSES[passes])
    model = make_potential("painn", [hessian])
    # plain DDP does not all-reduce when forward calls autograd.grad (forces)
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    loss_of(ddp, shard_batches()[rank]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters()}, out_file)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize(
    "passes",
    [
        "split",
        # in one process all three bounds give the same gradients
        # (test_memory_efficient_backward_gives_the_same_parameter_gradients);
        # "split" runs both the kept and the recomputed graphs under DDP
        pytest.param("keep", marks=pytest.mark.slow),
        pytest.param("recompute", marks=pytest.mark.slow),
    ],
)
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
    spawn_ranks(worker, args)
    ddp_grads = torch.load(out_file)
    model = make_potential("painn", [Hessian(mode="full", passes=PASSES["keep"])])
    total = sum(loss_of(model, b) for b in shard_batches()) / 2
    total.backward()
    for name, p in model.named_parameters():
        expected = p.grad if p.grad is not None else torch.zeros_like(p)
        got = ddp_grads[name] if ddp_grads[name] is not None else torch.zeros_like(p)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


#: the start of the warning of a Hessian module trained under DDP outside HessianTask
UNCHECKED = (
    "Hessian: training under torch.distributed (2 processes) outside HessianTask"
)


def warning_worker(rank, init_file, out_file):
    """Training forwards under a two-process group: which of them warn."""
    import warnings

    from schnetpack.task import ModelOutput

    from schnetpack_hessian import HessianTask

    join_gloo_group(init_file, rank)
    batch = shard_batches()[rank]
    caught = {}

    def train(name, model, find_unused, steps=1):
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=find_unused
        )
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            loss_of(ddp, batch).backward()
            for _ in range(steps - 1):  # outside DDP now: the process warned already
                loss_of(model, batch)
        caught[name] = [str(w.message) for w in seen if UNCHECKED in str(w.message)]

    # DDP that looks for unused parameters: nothing to say
    train("find_unused", make_potential("schnet", [Hessian(mode="hvp")]), True)
    # a HessianTask's model: the task checks the strategy (it refuses this one)
    task = HessianTask(
        model=make_potential("schnet", [Hessian(mode="hvp")]),
        outputs=[ModelOutput("energy", loss_fn=torch.nn.MSELoss(), metrics={})],
        optimizer_args={"lr": 1e-4},
    )
    train("hessian_task", task.model, False)
    # plain DDP outside HessianTask: warned once in this process, not at every step
    train("plain", make_potential("schnet", [Hessian(mode="hvp")]), False, steps=3)
    torch.save(caught, f"{out_file}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def test_training_under_ddp_outside_hessian_task_warns_once_per_process(tmp_path):
    """A Hessian module trained under DDP without find_unused_parameters=True and
    outside HessianTask warns once per process, naming the fix; DDP that looks for
    unused parameters and a HessianTask's model do not."""
    out = tmp_path / "warnings"
    spawn_ranks(warning_worker, (str(tmp_path / "init"), str(out)))
    for rank in (0, 1):
        caught = torch.load(f"{out}.{rank}", weights_only=True)
        assert caught["find_unused"] == [] and caught["hessian_task"] == []
        assert len(caught["plain"]) == 1
        assert "strategy='ddp_find_unused_parameters_true'" in caught["plain"][0]
        assert "trainer=ddp_hessian" in caught["plain"][0]


def lightning_fit(task_kind, out_dir):
    """Two CPU ranks (gloo) started by Lightning fit two steps each with a plain
    ``AtomisticTask`` under ``strategy="ddp"`` or a ``HessianTask`` under
    ``ddp_find_unused_parameters_true`` (run by :func:`run_as_script`).  Rank K works
    in ``out_dir/rankK``, where ``EpochCost`` would write its ``cost.json``."""
    import datetime
    import os
    from pathlib import Path

    from pytorch_lightning.strategies import DDPStrategy
    from schnetpack.task import AtomisticTask

    from schnetpack_hessian.steps import hessian_module, labelled_batch, training_task
    from schnetpack_hessian.study.cost import EpochCost
    from schnetpack_hessian.testing import quiet_trainer

    rank = int(os.environ.get("LOCAL_RANK", "0"))
    work = Path(out_dir) / f"rank{rank}"
    work.mkdir(exist_ok=True)
    os.chdir(work)
    task = training_task("schnet", "hvp", n_atom_basis=8, n_interactions=1)
    if task_kind == "plain":
        model = make_potential("schnet", [hessian_module("hvp")], n_atom_basis=8)
        task = AtomisticTask(
            model=model, outputs=task.outputs, optimizer_args={"lr": 1e-4}
        )
    batch = labelled_batch(build_batch(reference_molecules()))
    batches = [{k: v.clone() for k, v in batch.items()} for _ in range(2)]
    trainer = quiet_trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(
            find_unused_parameters=task_kind != "plain",
            process_group_backend="gloo",
            timeout=datetime.timedelta(seconds=60),
        ),
        max_steps=1 if task_kind == "plain" else 2,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=[EpochCost("cost.json")],
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(task, train_dataloaders=loader)


@pytest.mark.parametrize("task_kind", ["plain", "hessian_task"])
def test_lightning_ddp_warns_outside_hessian_task_and_one_rank_writes(
    task_kind, tmp_path
):
    """spktrain's path: a plain AtomisticTask under strategy='ddp' warns on every
    rank, a HessianTask under ddp_find_unused_parameters_true does not; the run's
    cost record is written by rank 0 alone."""
    from schnetpack_hessian.testing import run_as_script

    done = run_as_script(
        __file__, "lightning_fit", task_kind, str(tmp_path), cwd=tmp_path
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert log.count(UNCHECKED) == (2 if task_kind == "plain" else 0), log[-3000:]
    assert (tmp_path / "rank0" / "cost.json").exists()
    assert not (tmp_path / "rank1" / "cost.json").exists()
