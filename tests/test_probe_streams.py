"""Probe streams under torch.distributed: every rank draws its own probes."""

import pickle

import pytest
import torch
import torch.distributed as dist

from schnetpack_hessian import Hessian, properties
from schnetpack_hessian.testing import (
    build_batch,
    clone_batch,
    join_gloo_group,
    make_potential,
    reference_molecules,
    spawn_ranks,
)

pytestmark = pytest.mark.integration


def probes_of(module, batch):
    model = make_potential("schnet", [module]).train()
    return model(clone_batch(batch))[properties.hessian_probes].detach()


def worker(rank, init_file, resumed, out_file):
    join_gloo_group(init_file, rank)
    batch = build_batch(reference_molecules())
    fresh = probes_of(Hessian(mode="hvp", probes=dict(n=3, seed=7)), batch)
    # a module whose generator state was saved by rank 0 (a checkpoint)
    continued = probes_of(pickle.loads(resumed), batch)
    torch.save({"fresh": fresh, "continued": continued}, f"{out_file}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def test_every_rank_draws_its_own_probes_and_rank_0_the_single_process_ones(tmp_path):
    batch = build_batch(reference_molecules())
    single = Hessian(mode="hvp", probes=dict(n=3, seed=7))
    first = probes_of(single, batch)
    resumed = pickle.dumps(single)  # the generator state after one draw
    second = probes_of(single, batch)
    out = tmp_path / "probes"
    spawn_ranks(worker, (str(tmp_path / "init"), resumed, str(out)))
    ranks = [torch.load(f"{out}.{rank}") for rank in (0, 1)]
    torch.testing.assert_close(ranks[0]["fresh"], first, rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["continued"], second, rtol=0, atol=0)
    for kind in ("fresh", "continued"):
        assert not torch.equal(ranks[1][kind], ranks[0][kind])
        assert ranks[1][kind].shape == ranks[0][kind].shape
