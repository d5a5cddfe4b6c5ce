"""docs/APPLICATIONS.md runs as written (on a model fitted to its reaction)."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "APPLICATIONS.md"


def blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def namespace(fitted_model_file):
    """The examples executed in order in one namespace, the model file swapped in."""
    code = blocks()
    assert len(code) == 5
    first = code[0]
    assert 'model_file = "runs/<id>/best_model"' in first
    code[0] = first.replace(
        'model_file = "runs/<id>/best_model"', f'model_file = "{fitted_model_file}"'
    ).replace('energy_unit = "kcal/mol"', 'energy_unit = "eV"')
    ns = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in code:
            exec(compile(block, str(DOC), "exec"), ns)
    return ns


def test_vibrations_of_the_ts_have_one_imaginary_mode(namespace):
    freqs = namespace["frequencies"]
    assert np.iscomplex(freqs[0]) and abs(freqs[0]) > 500  # the TS mode
    assert not np.any(np.iscomplex(freqs[6:]))


def test_sella_finds_the_saddle_with_the_model_hessian(namespace):
    assert namespace["converged"] and namespace["n_imaginary"] == 1
    assert namespace["calc"].n_calls["hessian"] > 0


def test_neb_barrier_is_close_to_the_reference_irc(namespace):
    assert namespace["model_barrier"] == pytest.approx(
        namespace["ref_barrier"], abs=0.1
    )


def test_langevin_md_runs_without_hessians(namespace):
    atoms = namespace["atoms"]
    assert 0 < atoms.get_temperature() < 2000
    assert namespace["calc"].n_calls["hessian"] == namespace["calls_before"]["hessian"]
