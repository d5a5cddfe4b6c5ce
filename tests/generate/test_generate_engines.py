"""Quantum-chemistry engines: units, analytic Hessians against finite
differences of analytic gradients, the ASE calculator wrapper."""

import numpy as np
import pytest
from ase import Atoms, units

from schnetpack_hessian.generate.calculators import (
    EngineCalculator,
    MethodSpec,
    finite_difference_hessian,
    make_engine,
)

WATER = Atoms("OHH", positions=[[0, 0, 0.1], [0.76, 0, -0.45], [-0.74, 0.05, -0.47]])


@pytest.fixture(scope="module")
def hf_engine():
    pytest.importorskip("pyscf")
    return make_engine(MethodSpec(method="hf", basis="sto-3g"))


def test_pyscf_units_and_analytic_hessian(hf_engine):
    from pyscf import gto, scf

    res = hf_engine.compute(WATER.numbers, WATER.positions, hessian=True, fresh=True)
    mol = gto.M(
        atom=[(s, p) for s, p in zip(WATER.get_chemical_symbols(), WATER.positions)],
        basis="sto-3g",
        verbose=0,
    )
    e_ha = scf.RHF(mol).run(conv_tol=1e-10).e_tot
    assert res.energy == pytest.approx(e_ha * units.Hartree, abs=1e-6)
    # forces are −dE/dR in eV/Å: check one component by central differences
    x = WATER.positions.copy()
    h = 1e-3
    x[1, 0] += h
    ep = hf_engine.compute(WATER.numbers, x).energy
    x[1, 0] -= 2 * h
    em = hf_engine.compute(WATER.numbers, x).energy
    assert res.forces[1, 0] == pytest.approx(-(ep - em) / (2 * h), rel=1e-4)
    fd = finite_difference_hessian(
        lambda y: hf_engine.compute(WATER.numbers, y).forces,
        WATER.positions,
        1e-3,
        symmetrize=False,
    )
    np.testing.assert_allclose(res.hessian, res.hessian.T, atol=1e-6)
    np.testing.assert_allclose(res.hessian, fd, atol=2e-3 * np.abs(fd).max())


def test_ase_calculator_and_cache(hf_engine):
    atoms = WATER.copy()
    atoms.calc = EngineCalculator(hf_engine)
    hf_engine.reset()
    n0 = hf_engine.n_calls
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    assert f.shape == (3, 3)
    h = atoms.calc.get_hessian()
    assert h.shape == (9, 9)
    assert hf_engine.n_calls == n0 + 2  # energy+forces once, then the Hessian
    assert hf_engine.compute(atoms.numbers, atoms.positions).energy == pytest.approx(
        e, abs=1e-8
    )


def test_unknown_program_is_named():
    with pytest.raises(ValueError, match="'orca'"):
        make_engine(MethodSpec(program="orca"))
