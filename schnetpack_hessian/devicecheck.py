"""The device check behind ``spkhess-bench --check --device DEVICE``.

One command to run on a lent accelerator, sized to finish within five minutes on one
GPU (not yet run on one: no GPU has been lent); a CI-sized form (``size="ci"``,
``--quick``) runs on a CPU in seconds.  Each check is one entry of the JSON report with a
``status`` (``pass``, ``fail`` or ``skip``, the latter two with a ``reason``):

* ``finite_differences``: the float64 full Hessian of PaiNN (the shipped smooth
  settings) on the device against central differences of its forces (step 1e-4 Å),
  relative Frobenius error below 1e-6;
* ``memory_bound``: parameter gradients of a Hessian loss with every second-order
  graph kept, all recomputed in the backward (``retain_mb=0``) and the first chunk
  kept (``retain_mb=0.02``), float64, agree to 1e-9 (relative to each parameter's
  largest gradient), and the bounded runs do use the recomputing backward;
* ``training_full``, ``training_hvp``, ``training_rows``: training steps of PaiNN
  through Lightning and :class:`~schnetpack_hessian.HessianTask` (as ``spktrain``
  runs them) on the benchmark's mixed organics: median ms per step, peak memory, and
  the host synchronisations of one more step counted with
  :class:`~schnetpack_hessian.syncs.SyncCounter`; fails when one comes from this
  package outside metrics logging and the deliberate ones;
* ``ddp``: parameter gradients of two DDP ranks (NCCL, one GPU each) equal the
  single-process gradients of both shards to 1e-9; skipped without two CUDA devices.
"""

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import schnetpack as spk
import schnetpack.properties as spk_properties

from schnetpack_hessian import properties
from schnetpack_hessian.bench import benchmark_molecules, environment
from schnetpack_hessian.hessian import Hessian
from schnetpack_hessian.memory import peak_memory_mb, reset_peak_memory
from schnetpack_hessian.models import build_potential
from schnetpack_hessian.steps import (
    TRAINING_MODES,
    StepMonitor,
    labelled_batch,
    train_steps,
    training_task,
)
from schnetpack_hessian.syncs import SyncEvent
from schnetpack_hessian.testing import (
    build_batch,
    finite_difference_hessian,
    graph_functions,
    reference_molecules,
)

__all__ = [
    "CheckSize",
    "SIZES",
    "run_check",
    "check_finite_differences",
    "check_memory_bound",
    "check_training",
    "check_ddp",
]

FD_TOLERANCE = 1e-6
GRADIENT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class CheckSize:
    """How large the checks are.

    Attributes:
        fd_molecules: molecules of the finite-difference check (1-4 of H2O, CH4,
            TS-like HCN, C2H6).
        n_molecules: training batch (the benchmark's mixed 5-11-atom organics).
        n_atom_basis, n_interactions: size of the trained PaiNN.
        steps: timed training steps per mode (after one warm-up step).
        dtype: dtype of the training steps.
    """

    fd_molecules: int
    n_molecules: int
    n_atom_basis: int
    n_interactions: int
    steps: int
    dtype: str


#: ``full``: the benchmark's headline batch and model; ``ci``: seconds on a CPU
SIZES = {
    "full": CheckSize(4, 16, 128, 3, 20, "float32"),
    "ci": CheckSize(2, 3, 8, 1, 2, "float64"),
}


def _on(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict:
    return {k: v.to(device) for k, v in batch.items()}


def _small_potential(output: torch.nn.Module, device: torch.device, **kwargs):
    """A float64 PaiNN (16 features, 2 interactions, shipped smooth settings)."""
    return build_potential(
        "painn", [output], dtype=torch.float64, device=device, seed=0, **kwargs
    )


def _fd_molecules(n: int):
    mols = reference_molecules()  # H2O, CH4, C2H6, TS-like HCN
    return [mols[i] for i in (0, 1, 3, 2)][:n]


def check_finite_differences(device: torch.device, size: CheckSize) -> Dict:
    """The float64 full Hessian against central differences of the forces."""
    batch = _on(build_batch(_fd_molecules(size.fd_molecules)), device)
    model = _small_potential(Hessian(mode="full"), device).eval()
    hessian = model({k: v.clone() for k, v in batch.items()})[properties.hessian]
    forces = _small_potential(spk.atomistic.Forces(), device).eval()
    forces.load_state_dict(model.state_dict())
    reference = finite_difference_hessian(forces, batch, step=1e-4)
    error = float((hessian - reference).norm() / reference.norm())
    return _verdict(
        error < FD_TOLERANCE,
        "Hessian differs from FD",
        relative_error=error,
        tolerance=FD_TOLERANCE,
        n_atoms=batch[spk_properties.n_atoms].tolist(),
    )


def _verdict(ok: bool, reason: str, **fields: Any) -> Dict[str, Any]:
    """A check's JSON entry: ``status`` pass/fail, the ``reason`` when it fails,
    then the measured ``fields``."""
    out: Dict[str, Any] = {"status": "pass" if ok else "fail"}
    if not ok:
        out["reason"] = reason
    out.update(fields)
    return out


#: pass settings compared: every graph kept, all recomputed, the first chunk kept
MEMORY_PASSES = {
    "keep": {"chunk_size": 3, "memory_efficient": False},
    "recompute": {"chunk_size": 3, "retain_mb": 0.0},
    "split": {"chunk_size": 3, "retain_mb": 0.02},
}


def _gradients(passes: Dict, batch: Dict, target: torch.Tensor, device):
    model = _small_potential(Hessian(mode="full", passes=passes), device).train()
    out = model({k: v.clone() for k, v in batch.items()})
    hessian = out[properties.hessian]
    loss = ((hessian - target) ** 2).sum() + (out[spk_properties.forces] ** 2).sum()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return grads, "_MemoryBoundedRowsBackward" in graph_functions(hessian)


def _max_relative_difference(got: Dict, expected: Dict) -> float:
    if got.keys() != expected.keys():
        return math.inf
    worst = 0.0
    for name, g in expected.items():
        scale = float(g.abs().max()) or 1.0
        worst = max(worst, float((got[name] - g).abs().max()) / scale)
    return worst


def check_memory_bound(device: torch.device, size: CheckSize) -> Dict:
    """Memory-bounded backward against keeping every second-order graph."""
    # H2O, CH4, HCN: 9 seeded passes, three chunks of 3 (one kept with retain_mb=0.02)
    batch = _on(build_batch(_fd_molecules(3)), device)
    n_blocks = int((batch[spk_properties.n_atoms] ** 2).sum())
    gen = torch.Generator().manual_seed(0)
    target = torch.randn((n_blocks, 3, 3), generator=gen, dtype=torch.float64)
    target = target.to(device)
    runs = {
        name: _gradients(passes, batch, target, device)
        for name, passes in MEMORY_PASSES.items()
    }
    differences = {
        name: _max_relative_difference(runs[name][0], runs["keep"][0])
        for name in ("recompute", "split")
    }
    bounded = {name: runs[name][1] for name in MEMORY_PASSES}
    ok = max(differences.values()) < GRADIENT_TOLERANCE and bounded == {
        "keep": False,
        "recompute": True,
        "split": True,
    }
    return _verdict(
        ok,
        "gradients differ or the bound was not applied",
        max_relative_difference=differences,
        tolerance=GRADIENT_TOLERANCE,
        recomputing_backward_used=bounded,
    )


def _sync_report(events: List[SyncEvent]) -> Dict:
    counted = [e for e in events if e.counts]
    ours = [e for e in counted if e.origin == "schnetpack_hessian"]
    deliberate: Dict[str, int] = {}
    for e in events:
        if e.deliberate is not None:
            deliberate[e.deliberate] = deliberate.get(e.deliberate, 0) + 1
    calls: Dict[str, int] = {}
    for e in counted:
        key = f"{e.origin}: {e.kind} ({e.call}) at {e.where}"
        calls[key] = calls.get(key, 0) + 1
    return {
        "counted": len(counted),
        "from_this_package": len(ours),
        "deliberate": deliberate,
        "logging": sum(e.logging for e in events),
        "calls": calls,
    }


def check_training(device: torch.device, size: CheckSize, mode: str) -> Dict:
    """Training steps of ``mode``: time, peak memory, host synchronisations."""
    dtype = getattr(torch, size.dtype)
    molecules = benchmark_molecules(size.n_molecules)
    batch = labelled_batch(build_batch(molecules, dtype=dtype))
    task = training_task("painn", mode, dtype, size.n_atom_basis, size.n_interactions)
    counted_step = size.steps + 1  # after a warm-up step and the timed ones
    monitor = StepMonitor(count_steps=(counted_step,), simulate=device.type == "cpu")
    reset_peak_memory(device)
    train_steps(task, batch, size.steps + 2, str(device), monitor)
    peak, kind = peak_memory_mb(device)
    syncs = _sync_report(monitor.syncs[counted_step])
    return _verdict(
        syncs["from_this_package"] == 0,
        "host synchronisations from schnetpack_hessian in a step",
        ms_per_step=monitor.median_ms(skip=1),
        steps_timed=max(len(monitor.seconds) - 1, 0),
        n_molecules=size.n_molecules,
        n_atoms_total=sum(len(m) for m in molecules),
        peak_mem_mb=peak,
        peak_mem_kind=kind,
        host_syncs=syncs,
    )


def _ddp_shards(device: torch.device) -> List[Dict[str, torch.Tensor]]:
    mols = reference_molecules()
    return [_on(build_batch(mols[:2]), device), _on(build_batch(mols[2:]), device)]


def _ddp_loss(model, batch) -> torch.Tensor:
    out = model({k: v.clone() for k, v in batch.items()})
    hessian = out[properties.hessian]
    gen = torch.Generator().manual_seed(hessian.shape[0])
    target = torch.randn(hessian.shape, generator=gen, dtype=hessian.dtype)
    target = target.to(hessian.device)
    return ((hessian - target) ** 2).mean() + out[spk_properties.forces].pow(2).mean()


def _ddp_model(device: torch.device):
    passes = {"chunk_size": 3, "retain_mb": 0.02}
    return _small_potential(Hessian(mode="full", passes=passes), device)


def _ddp_worker(rank: int, backend: str, init_file: str, out_file: str) -> None:
    """One rank: DDP over the rank's shard; rank 0 saves the gradients."""
    dist.init_process_group(
        backend, init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    if backend == "nccl":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
        ids: Optional[List[int]] = [rank]
    else:
        device, ids = torch.device("cpu"), None
    model = _ddp_model(device)
    # forward differentiates the energy: DDP must look for unused parameters
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=True
    )
    _ddp_loss(ddp, _ddp_shards(device)[rank]).backward()
    if rank == 0:
        grads = {
            n: None if p.grad is None else p.grad.cpu()
            for n, p in model.named_parameters()
        }
        torch.save(grads, out_file)
    dist.barrier()
    dist.destroy_process_group()


def check_ddp(device: torch.device, allow_cpu: bool = False) -> Dict:
    """Two DDP ranks' gradients against the single-process gradients.

    Args:
        device: ``cuda`` (two GPUs, NCCL) or ``cpu`` (two processes, gloo; only with
            ``allow_cpu``: the CPU form is ``tests/test_ddp.py``'s).
    """
    if device.type == "cuda":
        found = torch.cuda.device_count()
        if found < 2 or not dist.is_nccl_available():
            return {
                "status": "skip",
                "reason": f"two-rank DDP needs two CUDA devices with NCCL; found "
                f"{found} device(s)",
            }
        backend, single = "nccl", torch.device("cuda", 0)
    elif allow_cpu:
        backend, single = "gloo", torch.device("cpu")
    else:
        return {
            "status": "skip",
            "reason": "two-rank DDP is checked on two CUDA devices; on a CPU the test "
            "suite runs it (tests/test_ddp.py, gloo)",
        }
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "grads.pt")
        mp.spawn(
            _ddp_worker,
            args=(backend, os.path.join(tmp, "init"), out_file),
            nprocs=2,
        )
        ddp_grads = torch.load(out_file)
    model = _ddp_model(single)
    total = sum(_ddp_loss(model, b) for b in _ddp_shards(single)) / 2
    total.backward()
    expected = {
        n: (p.grad if p.grad is not None else torch.zeros_like(p)).cpu()
        for n, p in model.named_parameters()
    }
    got = {
        n: g if g is not None else torch.zeros_like(expected[n])
        for n, g in ddp_grads.items()
    }
    difference = _max_relative_difference(got, expected)
    ok = difference < GRADIENT_TOLERANCE
    return _verdict(
        ok,
        "DDP gradients differ from the single-process gradients",
        backend=backend,
        max_relative_difference=difference,
        tolerance=GRADIENT_TOLERANCE,
    )


def run_check(
    device: str = "cuda",
    size: str = "full",
    log: Callable[[str], None] = print,
    ddp_on_cpu: bool = False,
) -> Dict:
    """Run every check on ``device``; the report (see the module docstring).

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:K``.
        size: a key of :data:`SIZES`.
        log: receives one line per check.
        ddp_on_cpu: run the DDP check with gloo on two CPU processes.
    """
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: no CUDA device is available")
    dims = SIZES[size]
    report: Dict = {
        "device": str(target),
        "size": size,
        "dimensions": asdict(dims),
        "environment": environment(target),
        "checks": {},
    }
    checks: Dict[str, Callable[[], Dict]] = {
        "finite_differences": lambda: check_finite_differences(target, dims),
        "memory_bound": lambda: check_memory_bound(target, dims),
    }
    for mode in TRAINING_MODES:
        checks[f"training_{mode}"] = lambda m=mode: check_training(target, dims, m)
    checks["ddp"] = lambda: check_ddp(target, allow_cpu=ddp_on_cpu)
    start = time.perf_counter()
    for name, check in checks.items():
        t0 = time.perf_counter()
        try:
            result = check()
        except Exception as error:  # a crash is this check's failure, the rest run
            result = {"status": "fail", "reason": f"{type(error).__name__}: {error}"}
        result["seconds"] = time.perf_counter() - t0
        report["checks"][name] = result
        log(_line(name, result))
    report["seconds"] = time.perf_counter() - start
    report["passed"] = all(
        c["status"] in ("pass", "skip") for c in report["checks"].values()
    )
    return report


def _line(name: str, result: Dict) -> str:
    """One log line of a check."""
    text = f"{name:20s} {result['status']:5s} {result['seconds']:6.1f} s"
    if "ms_per_step" in result:
        syncs = result["host_syncs"]
        text += (
            f"  {result['ms_per_step']:.1f} ms/step, peak {result['peak_mem_mb']:.0f} "
            f"MiB, host syncs: {syncs['from_this_package']} ours, "
            f"{syncs['counted'] - syncs['from_this_package']} upstream, "
            f"{sum(syncs['deliberate'].values())} deliberate"
        )
    elif "relative_error" in result:
        text += f"  relative error {result['relative_error']:.1e}"
    if "reason" in result:
        text += f"  ({result['reason']})"
    return text
