"""Reaction paths, barriers and IRC profiles on the shipped set's geometries."""

import numpy as np
import pytest

from schnetpack_hessian.data import iread_records
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.evaluation.reactions import (
    barrier_rows,
    irc_profile,
    reaction_paths,
)


@pytest.fixture(scope="module")
def hcn():
    return [r for r in iread_records(reactive_set_path()) if r.reaction == 0]


def test_path_runs_from_reactant_through_ts_to_product_in_any_order(hcn):
    shuffled = [hcn[i] for i in np.random.default_rng(1).permutation(len(hcn))]
    paths = reaction_paths(shuffled, {0: "HCN -> HNC"})
    rp = paths[0]
    assert rp.name == "HCN -> HNC"
    assert shuffled[rp.path[0]].kind == "reactant"
    assert shuffled[rp.path[-1]].kind == "product"
    assert len(rp.path) == 13  # R, P, TS and 10 IRC points; NMS are not on the path
    assert np.all(np.diff(rp.xi) >= 0)
    # the reference energy rises to the TS and falls after it
    e = np.array([shuffled[i].energy for i in rp.path])
    assert int(np.argmax(e)) == rp.path.index(rp.ts)


def test_barriers_and_profile_errors(hcn):
    paths = reaction_paths(hcn)
    ref = [a.energy for a in hcn]
    model = list(ref)
    ts = paths[0].ts
    model[ts] += 0.1  # the model's TS 0.1 eV too high
    (row,) = barrier_rows(paths, ref, model)
    assert row["barrier_fwd_error"] == pytest.approx(0.1)
    assert row["barrier_rev_error"] == pytest.approx(0.1)
    assert row["barrier_fwd_ref"] > 1.0  # 49.8 kcal/mol
    prof = irc_profile(paths[0], ref, model)
    assert prof.maximum_at_ts and prof.max_deviation == pytest.approx(0.1)
    assert prof.barrier_error == pytest.approx(0.1)
    # a model whose highest point is an IRC point beside the TS
    model[ts] -= 1.0
    prof = irc_profile(paths[0], ref, model)
    assert not prof.maximum_at_ts
    assert prof.max_deviation == pytest.approx(0.9)
