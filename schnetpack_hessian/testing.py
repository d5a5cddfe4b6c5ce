"""Reusable helpers for checking Hessians: test molecules, models, finite differences.

Kept in the package (as NequIP keeps its unit-test utilities) so that tests of every
model, and users checking their own models, share one implementation.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

import schnetpack as spk
import schnetpack.properties as spk_properties
import schnetpack.transform as trn

from schnetpack_hessian import properties
from schnetpack_hessian.hessian import energy_gradient
from schnetpack_hessian.layout import square_to_blocks
from schnetpack_hessian.models import build_potential

__all__ = [
    "reference_molecules",
    "ts_like_hcn",
    "build_batch",
    "make_potential",
    "quiet_trainer",
    "run_as_script",
    "spawn_ranks",
    "join_gloo_group",
    "train_tiny",
    "logged_validation",
    "TINY_TRAINING",
    "device_params",
    "on_device",
    "finite_difference_hessian",
    "hessian_loss_gradients",
    "energy_and_gradient",
    "run_spktrain",
    "graph_functions",
    "descendants",
    "alive",
    "claim_elsewhere",
    "wait_until",
]


def ts_like_hcn() -> Atoms:
    """Geometry near the HCN ⇌ HNC transition state (H bridging C and N), Å."""
    return Atoms(
        "CNH",
        positions=[[0.0, 0.0, 0.0], [1.19, 0.0, 0.0], [0.55, 1.12, 0.0]],
    )


def reference_molecules(rattle: float = 0.03, seed: int = 7) -> List[Atoms]:
    """H2O, CH4, C2H6 and a TS-like HCN geometry, rattled off symmetry (Å).

    Rattling avoids the exactly symmetric geometries at which PaiNN's vector norms are
    not smooth on the finite-difference scale (see :mod:`schnetpack_hessian.nn`).
    """
    mols = [molecule("H2O"), molecule("CH4"), molecule("C2H6"), ts_like_hcn()]
    rng = np.random.default_rng(seed)
    for atoms in mols:
        if rattle > 0:
            atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    return mols


def build_batch(
    atoms_list: Sequence[Atoms], cutoff: float = 5.0, dtype: torch.dtype = torch.float64
) -> Dict[str, torch.Tensor]:
    """A SchNetPack input batch (neighbour lists included) for a list of molecules."""
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=trn.MatScipyNeighborList(cutoff=cutoff), dtype=dtype
    )
    return converter(list(atoms_list))


def make_potential(
    representation: str = "painn",
    output_modules: Optional[List[torch.nn.Module]] = None,
    cutoff: float = 5.0,
    n_atom_basis: int = 16,
    n_interactions: int = 2,
    smooth: bool = False,
    epsilon: Optional[float] = None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> spk.model.NeuralNetworkPotential:
    """A small float64 SchNet or PaiNN energy model followed by ``output_modules``
    (:func:`~schnetpack_hessian.models.build_potential` with the tests' defaults:
    SchNetPack's plain cutoff and epsilon unless ``smooth``, 12 radial functions).

    Args:
        representation: ``"painn"`` or ``"schnet"``.
        output_modules: modules after the energy ``Atomwise`` (e.g. ``Hessian``).
        smooth: the shipped C² cutoff and PaiNN epsilon instead of SchNetPack's.
        epsilon: PaiNN's norm epsilon, overriding ``smooth``'s.
        seed: torch seed for the initial weights.
    """
    return build_potential(
        representation,
        output_modules,
        cutoff=cutoff,
        n_atom_basis=n_atom_basis,
        n_interactions=n_interactions,
        n_rbf=12,
        smooth=smooth,
        epsilon=epsilon,
        dtype=dtype,
        seed=seed,
    )


def run_as_script(
    test_file: str, function: str, *args: object, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Call ``function(*args)`` of the test module ``test_file`` in a fresh Python
    process, as a script (``__main__``: what Lightning's DDP launcher re-runs for its
    other ranks), with one thread per process; ``args`` are passed by their repr."""
    module = Path(test_file)
    script = Path(cwd) / f"run_{module.stem}_{function}.py"
    call = ", ".join(repr(a) for a in args)
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(module.parent)!r})\n"
        f"import {module.stem}\n"
        "if __name__ == '__main__':\n"
        f"    {module.stem}.{function}({call})\n"
    )
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def join_gloo_group(init_file: str, rank: int, world_size: int = 2) -> None:
    """Join a CPU (gloo) process group through the file ``init_file``, giving up on
    any collective after 2 minutes (torch's default is 30)."""
    import datetime

    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )


def spawn_ranks(
    function, args: Tuple = (), nprocs: int = 2, timeout: float = 300
) -> None:
    """``torch.multiprocessing.spawn(function, args, nprocs)`` that gives up after
    ``timeout`` seconds: the ranks are stopped and ``TimeoutError`` names the
    function, so a rank stuck in a collective fails its test instead of hanging the
    suite. A rank's exception is re-raised as ``spawn`` does."""
    import time

    import torch.multiprocessing as mp

    context = mp.start_processes(
        function, args=args, nprocs=nprocs, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            for process in context.processes:
                process.join(10)
            raise TimeoutError(
                f"{function.__name__}: {nprocs} ranks still running after "
                f"{timeout:.0f} s; stopped"
            )


def device_params(meta: bool = False) -> list:
    """Devices for ``pytest.mark.parametrize("device", ...)``: ``"cpu"``, ``"meta"``
    (tensors without data, for code that is pure shape logic) when ``meta``, and
    ``"cuda"``, skipped without a GPU."""
    import pytest

    cuda = pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"),
    )
    return ["cpu"] + (["meta"] if meta else []) + [cuda]


def on_device(batch: Dict[str, torch.Tensor], device: str) -> Dict[str, torch.Tensor]:
    """A copy of a collated CPU batch on ``device``, its sizes registered from the
    host first (:func:`~schnetpack_hessian.packing.register_packing`, as
    :class:`~schnetpack_hessian.HessianTask` does), so that nothing downstream reads
    them on the device: the way a ``meta`` batch can run at all."""
    from schnetpack_hessian.packing import Packing, register_packing

    packing = Packing.from_batch(batch, keep_positions=True)
    moved = {key: value.to(device) for key, value in batch.items()}
    register_packing(
        moved[spk_properties.n_atoms], packing, moved.get(spk_properties.idx_m)
    )
    return moved


def quiet_trainer(**kwargs):
    """A Lightning ``Trainer`` for tests: no logger, checkpoints, progress bar or
    model summary, and ``inference_mode=False`` (validation differentiates the
    energy); ``kwargs`` add to or override these."""
    import pytorch_lightning as pl

    settings = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    settings.update(kwargs)
    return pl.Trainer(**settings)


def _forces(model: torch.nn.Module, batch: Dict[str, torch.Tensor], key: str):
    inputs = {k: v.clone() for k, v in batch.items()}
    inputs[spk_properties.R].requires_grad_()
    with torch.enable_grad():
        results = model(inputs)
    return results[key].detach()


def finite_difference_hessian(
    model: torch.nn.Module,
    batch: Dict[str, torch.Tensor],
    step: float = 1e-4,
    force_key: str = spk_properties.forces,
) -> torch.Tensor:
    """Hessians by central differences of the model's forces, ``(ΣN², 3, 3)``.

    Every packed coordinate is displaced by ±``step`` (length unit); neighbour lists
    are kept, so no pair may be within ``step`` of the cutoff.
    """
    positions = batch[spk_properties.R].detach()
    n_atoms = batch[spk_properties.n_atoms].tolist()
    offsets = np.cumsum([0] + n_atoms)
    columns = []
    for a in range(positions.shape[0]):
        for c in range(3):
            shifted = []
            for sign in (1.0, -1.0):
                moved = dict(batch)
                pos = positions.clone()
                pos[a, c] += sign * step
                moved[spk_properties.R] = pos
                shifted.append(_forces(model, moved, force_key))
            columns.append(-(shifted[0] - shifted[1]) / (2 * step))  # d(dE/dR)/dR_ac
    derivs = torch.stack(columns)  # (3ΣN, ΣN, 3): [3a + c, b, d] = d²E/dR_ac dR_bd
    blocks = []
    for m, n in enumerate(n_atoms):
        lo, hi = offsets[m], offsets[m + 1]
        square = derivs[3 * lo : 3 * hi, lo:hi, :].reshape(3 * n, 3 * n)
        blocks.append(square_to_blocks(0.5 * (square + square.T)))
    return torch.cat(blocks)


def clone_batch(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A copy of a batch whose tensors can be given requires_grad independently."""
    return {k: v.clone() for k, v in batch.items()}


def hessian_loss_gradients(
    hessian_module: torch.nn.Module,
    batch: Dict[str, torch.Tensor],
    target: torch.Tensor,
    representation: str = "painn",
) -> Dict[str, torch.Tensor]:
    """Parameter gradients of ``Σ(H - target)² + ΣF²`` for a seeded model in training.

    The model is :func:`make_potential` (float64, seed 0) with ``hessian_module`` as
    its output module, so two calls differ only in how the module computes ``H``.

    Args:
        hessian_module: a full-mode :class:`~schnetpack_hessian.Hessian`.
        batch: a float64 batch (not modified).
        target: ``(ΣN², 3, 3)``.

    Returns:
        ``{parameter name: gradient}`` for every parameter that got one.
    """
    model = make_potential(representation, [hessian_module]).train()
    out = model(clone_batch(batch))
    loss = ((out[properties.hessian] - target) ** 2).sum() + (
        out[spk_properties.forces] ** 2
    ).sum()
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def energy_and_gradient(
    model: spk.model.NeuralNetworkPotential, batch: Dict[str, torch.Tensor]
) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Run the energy part of a :func:`make_potential` model on a copy of ``batch``.

    Returns:
        The inputs after the energy ``Atomwise`` (positions requiring grad) and dE/dR
        ``(ΣN, 3)`` with its graph, for testing the derivative functions directly.
    """
    inputs = clone_batch(batch)
    inputs[spk_properties.R].requires_grad_()
    for module in model.input_modules:
        inputs = module(inputs)
    inputs = model.output_modules[0](model.representation(inputs))
    return inputs, energy_gradient(inputs["energy"], inputs[spk_properties.R])


def run_spktrain(
    args: Sequence[str],
    cwd: Path,
    timeout: float = 900,
    env: Optional[Dict[str, str]] = None,
) -> "subprocess.CompletedProcess[str]":
    """Run the ``spktrain`` of this interpreter's environment in ``cwd`` (created),
    single-threaded, with Hydra's full errors; output captured as text.

    Args:
        env: extra environment variables on top of the current environment.
    """
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("spktrain")
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1", **(env or {}))
    return subprocess.run(
        [str(exe), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: spktrain overrides of a two-epoch run of a tiny model (one interaction, 8 features)
#: with a CSV log, on test files without single-atom references.
TINY_TRAINING = (
    "trainer.max_epochs=2",
    "model.representation.n_atom_basis=8",
    "model.representation.n_interactions=1",
    "logger=csv",
    "globals.atomrefs=False",
)


def train_tiny(args: Sequence[str], cwd: Path) -> Path:
    """Run spktrain with ``args`` and :data:`TINY_TRAINING` in ``cwd``; the run's
    directory (the only one under ``cwd/runs``).

    Raises:
        AssertionError: spktrain failed (its stderr's tail in the message).
    """
    result = run_spktrain([*args, *TINY_TRAINING], cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (Path(cwd) / "runs").iterdir()
    return run


def logged_validation(run_dir: Path, key: str) -> List[float]:
    """The values of the validation metric ``key`` (e.g. ``val_hessian_MAE``) a
    CSV-logged run recorded, one per epoch."""
    import csv

    (metrics,) = Path(run_dir).glob("csv/**/metrics.csv")
    with open(metrics) as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def graph_functions(tensor: torch.Tensor) -> set:
    """Names of every autograd function in the graph of ``tensor`` (e.g. to check that
    ``_MemoryBoundedRowsBackward``, the recomputing backward, is really used)."""
    names, seen, stack = set(), set(), [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names


def descendants(pid: int) -> List[int]:
    """Process ids of every live descendant of ``pid`` (from ``/proc``, Linux)."""
    children: Dict[int, List[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if alive(child):
                found.append(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_until(condition, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds passed."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


_CLAIM = """
import sys, time
from schnetpack_hessian.files import claim_output
with claim_output(sys.argv[1]):
    print("claimed", flush=True)
    time.sleep(1000)
"""


def claim_elsewhere(path) -> "subprocess.Popen[str]":
    """A process that holds the output claim of ``path`` until it is killed (another
    writer of the same output, for tests)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLAIM, str(path)], stdout=subprocess.PIPE, text=True
    )
    if proc.stdout.readline().strip() != "claimed":
        proc.kill()
        raise RuntimeError(f"could not claim {path} in a subprocess")
    return proc
