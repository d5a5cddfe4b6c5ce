"""Fixtures of the generator tests: tiny reaction lists and a runner for the
workflow script (run in a subprocess, so a run can be killed and resumed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = (
    Path(__file__).resolve().parents[2] / "data_scripts" / "generate_reactive_set.py"
)

NH3_INVERSION = """\
  - id: 3
    name: NH3 umbrella inversion
    reactant:
      xyz: |
        N 0.0 0.0 0.0
        H 0.94 0.0 0.38
        H -0.47 0.8141 0.38
        H -0.47 -0.8141 0.38
    product:
      xyz: |
        N 0.0 0.0 0.0
        H 0.94 0.0 -0.38
        H -0.47 0.8141 -0.38
        H -0.47 -0.8141 -0.38
"""

HCN_HNC = """\
  - id: 7
    name: HCN -> HNC
    reactant:
      xyz: |
        C 0.0 0.0 0.0
        N 0.0 0.0 1.156
        H 0.0 0.0 -1.066
    product:
      xyz: |
        C 0.0 0.0 0.0
        N 0.0 0.0 1.169
        H 0.0 0.0 2.165
    ts_guess:
      xyz: |
        C 0.0 0.0 0.0
        N 0.0 0.0 1.19
        H 0.0 1.10 0.40
"""

#: cheap settings: 4 IRC points and 2×2 normal-mode samples per reaction
CHEAP = [
    "--program",
    "tblite",
    "--n-irc",
    "4",
    "--n-nms-centres",
    "2",
    "--n-nms-per-centre",
    "2",
    "--no-progress",
]


@pytest.fixture(scope="session")
def reaction_entries():
    """YAML entries of two small reactions (ids 3 and 7)."""
    return {"nh3": NH3_INVERSION, "hcn": HCN_HNC}


@pytest.fixture(scope="session")
def script():
    """Helpers for running the workflow script: ``SimpleNamespace(run, popen_args,
    env, cheap)``."""
    from types import SimpleNamespace

    return SimpleNamespace(
        run=run_script,
        args=lambda *a: [sys.executable, str(SCRIPT), *map(str, a)],
        env=script_env,
        cheap=list(CHEAP),
    )


@pytest.fixture(scope="session")
def nh3_springs():
    """NH3 with a spring network: ``(atoms, (12, 12) Hessian in eV/Å²)`` from
    finite differences of the analytic spring forces."""
    import numpy as np
    from ase import Atoms

    from schnetpack_hessian.generate.calculators import finite_difference_hessian

    up = np.array(
        [[0, 0, 0], [0.94, 0, 0.38], [-0.47, 0.8141, 0.38], [-0.47, -0.8141, 0.38]]
    )
    atoms = Atoms("NHHH", positions=up)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    r0 = {p: np.linalg.norm(up[p[0]] - up[p[1]]) for p in pairs}

    def forces(x):
        f = np.zeros_like(x)
        for i, j in pairs:
            d = x[i] - x[j]
            r = np.linalg.norm(d)
            g = 30.0 * (r - r0[(i, j)]) * d / r
            f[i] -= g
            f[j] += g
        return f

    return atoms, finite_difference_hessian(forces, up, step=1e-4)


def script_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def _tblite_importable() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import tblite.interface"], capture_output=True
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def tblite_available():
    if not _tblite_importable():
        pytest.skip("tblite is not installed (pip install schnetpack-hessian[qc])")
    pytest.importorskip("sella")


def write_reactions(path: Path, *entries: str) -> Path:
    path.write_text("reactions:\n" + "".join(entries))
    return path


def run_script(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``generate_reactive_set.py`` with ``args`` and return the result."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        env=script_env(),
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def xtb_run(tmp_path_factory, tblite_available):
    """One uninterrupted cheap run over two reactions: (yaml, workdir, out)."""
    root = tmp_path_factory.mktemp("xtb_run")
    yaml = write_reactions(root / "reactions.yaml", NH3_INVERSION, HCN_HNC)
    out = root / "full.h5"
    run_script(
        "run", "--reactions", yaml, "--workdir", root / "work", "--out", out, *CHEAP
    )
    return yaml, root / "work", out
