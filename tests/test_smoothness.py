"""Why Hessian training needs a C² cutoff and a larger PaiNN epsilon (DESIGN.md §2)."""

import pytest
import torch
from ase import Atoms
from ase.build import molecule

from schnetpack_hessian import Hessian, properties
from schnetpack_hessian.nn import smoothstep_cutoff
from schnetpack_hessian.testing import build_batch, make_potential

RECOMMENDED_PAINN_EPSILON = 1e-4


def max_abs_hessian(model, atoms, cutoff):
    batch = build_batch([atoms], cutoff=cutoff)
    return float(model.eval()(batch)[properties.hessian].abs().max())


def dimer(distance):
    return Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, distance]])


def test_smoothstep_cutoff_is_c2_at_the_cutoff():
    r = torch.tensor([0.999999, 1.0, 1.5], dtype=torch.float64, requires_grad=True)
    rc = torch.tensor(1.0, dtype=torch.float64)
    f = smoothstep_cutoff(r, rc)
    (df,) = torch.autograd.grad(f.sum(), r, create_graph=True)
    (d2f,) = torch.autograd.grad(df.sum(), r)
    assert abs(float(f[0])) < 1e-15 and abs(float(df[0])) < 1e-10
    assert abs(float(d2f[0])) < 1e-4
    assert float(f[2]) == 0.0
    inside = smoothstep_cutoff(torch.tensor([0.0, 0.5]), torch.tensor(1.0))
    torch.testing.assert_close(inside, torch.tensor([1.0, 0.5]))


@pytest.mark.parametrize("smooth", [False, True])
def test_hessian_jumps_at_the_cutoff_only_with_cosine_cutoff(smooth):
    """A dimer crossing r_c: the Hessian is 0 outside; inside it must tend to 0."""
    rc = 2.0
    model = make_potential("schnet", [Hessian()], cutoff=rc, smooth=smooth)
    outside = max_abs_hessian(model, dimer(rc + 1e-4), rc)
    near = [max_abs_hessian(model, dimer(rc - d), rc) for d in (1e-2, 1e-3, 1e-4)]
    assert outside == 0.0
    if smooth:
        assert near[2] < 0.02 * near[0]  # vanishes linearly: continuous Hessian
    else:
        assert near[2] > 0.5 * near[0] > 0  # CosineCutoff: a finite jump (C¹ only)


def test_painn_default_epsilon_spikes_at_symmetric_geometries():
    """At exact Td CH4 the carbon's vector features vanish and sqrt(|μ|²+ε) has
    curvature 1/√ε: with SchNetPack's ε=1e-8 the Hessian there is many times the
    Hessian 0.02 Å away; with the recommended ε it is not."""
    symmetric = molecule("CH4")
    displaced = symmetric.copy()
    displaced.positions[1] += [0.0, 0.0, 0.02]
    ratios = {}
    for eps in (1e-8, RECOMMENDED_PAINN_EPSILON):
        model = make_potential("painn", [Hessian()], epsilon=eps, smooth=True)
        ratios[eps] = max_abs_hessian(model, symmetric, 5.0) / max_abs_hessian(
            model, displaced, 5.0
        )
    assert ratios[1e-8] > 5.0
    assert ratios[RECOMMENDED_PAINN_EPSILON] < 1.2
