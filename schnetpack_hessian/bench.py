"""Speed and memory of Hessian training and inference (behind ``spkhess-bench``).

A *training step* is forward + loss + backward + optimiser step on one packed batch;
its time is the median over repeats after warm-up.  Peak memory is the process's peak
RSS on CPU (``VmHWM``) or ``torch.cuda.max_memory_allocated`` of the configured CUDA
device (``cuda:K`` included: peaks, synchronisation and the device name in the
environment are those of the bench's device, not of the current CUDA device); memory
runs each configuration in its own process so that one configuration's peak cannot
hide another's.  Configurations:

* ``ef``: energy + forces (``spk.atomistic.Forces``), the baseline;
* ``hvp{k}``: + Hessian-vector-product loss with ``k`` Gaussian probes;
* ``rows{k}``: + HVP loss with ``k`` random Hessian rows (HORM);
* ``full`` / ``full_c{n}``: + full-Hessian loss with the module's defaults (rigid-motion
  symmetry, graphs kept up to the device's budget, 256 MiB on a CPU, the rest
  recomputed in chunks; seeds vectorised on GPUs and on small CPU batches) or chunks
  of ``n`` (``full_call``: all at once;
  ``full_retain``: every graph kept until the loss backward; ``full_recompute``: none
  kept; ``full_allrows``: all ``3N`` rows seeded, no symmetry);
* ``response``: SchNetPack's ``Response(["forces", "hessian"])`` with the same loss.
"""

import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from ase import Atoms
from ase.build import molecule

import schnetpack as spk
import schnetpack.properties as spk_properties
from schnetpack.task import ModelOutput

from schnetpack_hessian import Hessian, HessianOutput
from schnetpack_hessian.memory import peak_memory_mb, reset_peak_memory, synchronize
from schnetpack_hessian.models import build_potential
from schnetpack_hessian.steps import hessian_module
from schnetpack_hessian.testing import build_batch

__all__ = [
    "BenchConfig",
    "benchmark_molecules",
    "build_model",
    "time_training_step",
    "step_memory",
    "time_inference",
    "run_in_subprocess",
    "run_suite",
]

#: small H/C/N/O molecules of ASE's G2 set, 5 to 11 atoms
SMALL_ORGANICS = (
    "CH4", "CH3OH", "H3CNH2", "C2H4", "CH3CHO", "CH3CH2OH", "C2H6", "CH3CN",
    "HCOOH", "CH3COOH", "CH3OCH3", "C3H8", "CH3CONH2", "CH2OCH2", "HCOOCH3", "C5H5N",
)  # fmt: skip


@dataclass
class BenchConfig:
    """One benchmark case.

    Attributes:
        kind: ``ef``, ``hvp``, ``rows``, ``full`` or ``response``.
        representation: ``painn`` or ``schnet``.
        n_molecules: batch size.
        n_atoms: atoms per molecule (None: the mixed 5–11-atom organics).
        n_probes: probes for ``hvp``/``rows``.
        chunk_size: seeds per pass and per backward step for ``full`` (the module's
            ``"auto"``; None: all at once).
        memory_efficient: memory-bounded backward for ``full``.
        retain_mb: graph memory kept from the forward pass (``PassSettings.retain_mb``;
            ``"auto"``: 256 MiB on a CPU, a tenth of a GPU's free memory).
        invariance: symmetry used by ``full`` (``Hessian.invariance``).
        features, interactions, cutoff: model size (Å).
        dtype: ``float32`` or ``float64``.
        device: ``cpu`` or ``cuda``.
        repeats, warmup: timed (at least) and untimed steps.
        min_time: keep repeating (up to ``max_repeats``) until the timed steps add up
            to this many seconds, so that the cheap configurations, whose medians
            are the denominators of the ratios, are not single noisy samples.
        max_repeats: cap on the timed steps.
    """

    kind: str = "ef"
    representation: str = "painn"
    n_molecules: int = 16
    n_atoms: Optional[int] = None
    n_probes: int = 1
    chunk_size: Union[int, str, None] = "auto"
    memory_efficient: bool = True
    retain_mb: Union[float, str, None] = "auto"
    invariance: str = "auto"
    features: int = 128
    interactions: int = 3
    cutoff: float = 5.0
    dtype: str = "float32"
    device: str = "cpu"
    repeats: int = 5
    warmup: int = 2
    min_time: float = 0.0
    max_repeats: int = 100
    label: str = field(default="")

    def name(self) -> str:
        if self.label:
            return self.label
        base = {"hvp": f"hvp{self.n_probes}", "rows": f"rows{self.n_probes}"}.get(
            self.kind, self.kind
        )
        if self.kind == "full" and self.chunk_size != "auto":
            base += f"_c{self.chunk_size or 'all'}"
        return base


def benchmark_molecules(n_molecules: int, n_atoms: Optional[int] = None) -> List[Atoms]:
    """``n_molecules`` molecules: the mixed organics, or alkane-like chains of ``n_atoms``.

    Chains ``C_kH_{2k+2}`` give sizes 5, 8, 11, ...; other sizes drop hydrogens from the
    next larger chain, which keeps the geometry sensible for timing purposes.
    """
    if n_atoms is None:
        return [
            molecule(SMALL_ORGANICS[i % len(SMALL_ORGANICS)])
            for i in range(n_molecules)
        ]
    n_carbon = max(1, -(-(n_atoms - 2) // 3))
    chain = _alkane(n_carbon)
    keep = [i for i in range(len(chain)) if chain[i].symbol == "C"]
    keep += [i for i in range(len(chain)) if chain[i].symbol == "H"][
        : n_atoms - len(keep)
    ]
    base = chain[sorted(keep)]
    return [base.copy() for _ in range(n_molecules)]


def _alkane(n_carbon: int) -> Atoms:
    """A zig-zag alkane C_nH_{2n+2} (Å)."""
    positions, symbols = [], []
    for i in range(n_carbon):
        x, y = 1.26 * i, 0.89 * (i % 2)
        symbols.append("C")
        positions.append((x, y, 0.0))
        sign = -1 if i % 2 == 0 else 1
        symbols += ["H", "H"]
        positions += [(x, y + 0.63 * sign, 0.89), (x, y + 0.63 * sign, -0.89)]
    symbols += ["H", "H"]
    positions += [
        (-1.05, 0.0, 0.0),
        (1.26 * (n_carbon - 1) + 1.05, 0.89 * ((n_carbon - 1) % 2), 0.0),
    ]
    return Atoms(symbols, positions=positions)


def build_model(cfg: BenchConfig) -> spk.model.NeuralNetworkPotential:
    """The shipped PaiNN/SchNet config (:func:`~schnetpack_hessian.models.build_potential`,
    20 radial functions) with the output module of ``cfg.kind``."""
    if cfg.kind == "ef":
        derivative: torch.nn.Module = spk.atomistic.Forces()
    elif cfg.kind == "response":
        derivative = spk.atomistic.Response("energy", ["forces", "hessian"])
    elif cfg.kind == "full":
        derivative = Hessian(
            mode="full",
            passes=dict(
                chunk_size=cfg.chunk_size,
                memory_efficient=cfg.memory_efficient,
                retain_mb=cfg.retain_mb,
            ),
            invariance=cfg.invariance,
        )
    elif cfg.kind in ("hvp", "rows"):
        derivative = hessian_module(cfg.kind, cfg.n_probes)
    else:
        raise ValueError(f"unknown benchmark kind {cfg.kind!r}")
    return build_potential(
        cfg.representation,
        [derivative],
        cutoff=cfg.cutoff,
        n_atom_basis=cfg.features,
        n_interactions=cfg.interactions,
        n_rbf=20,
        smooth=True,
        dtype=getattr(torch, cfg.dtype),
        device=cfg.device,
        seed=None,
    )


def _batch(cfg: BenchConfig) -> Dict[str, torch.Tensor]:
    dtype = getattr(torch, cfg.dtype)
    batch = build_batch(
        benchmark_molecules(cfg.n_molecules, cfg.n_atoms), cfg.cutoff, dtype
    )
    batch = {k: v.to(cfg.device) for k, v in batch.items()}
    n_atoms = batch[spk_properties.n_atoms]
    gen = torch.Generator().manual_seed(0)
    batch["energy"] = torch.randn(len(n_atoms), generator=gen, dtype=dtype).to(
        cfg.device
    )
    batch["forces"] = torch.randn(
        batch[spk_properties.R].shape, generator=gen, dtype=dtype
    ).to(cfg.device)
    n_blocks = int((n_atoms * n_atoms).sum())
    hess = torch.randn((n_blocks, 3, 3), generator=gen, dtype=dtype)
    batch["hessian"] = (hess + hess.transpose(1, 2)).to(cfg.device)
    return batch


def _outputs(cfg: BenchConfig) -> List[ModelOutput]:
    mse = torch.nn.MSELoss()
    outs: List[ModelOutput] = [
        ModelOutput("energy", loss_fn=mse, loss_weight=0.01, metrics={}),
        ModelOutput("forces", loss_fn=mse, loss_weight=1.0, metrics={}),
    ]
    if cfg.kind == "response":
        outs.append(ModelOutput("hessian", loss_fn=mse, loss_weight=1.0, metrics={}))
    elif cfg.kind != "ef":
        outs.append(HessianOutput(loss_weight=1.0, metrics={}))
    return outs


def _repeat(call: Callable[[], object], cfg: BenchConfig) -> List[float]:
    """Seconds of each timed call after ``cfg.warmup`` untimed ones (see BenchConfig)."""
    times: List[float] = []
    for i in range(cfg.warmup + max(cfg.repeats, cfg.max_repeats)):
        synchronize(cfg.device)
        t0 = time.perf_counter()
        call()
        synchronize(cfg.device)
        if i >= cfg.warmup:
            times.append(time.perf_counter() - t0)
            if len(times) >= cfg.repeats and sum(times) >= cfg.min_time:
                break
    return times


def time_training_step(cfg: BenchConfig) -> Dict[str, float]:
    """Median training-step time (s) and memory (MiB) of one configuration, with the
    last step's loss and parameter-gradient norm (a step that trains nothing shows)."""
    model = build_model(cfg).train()
    outputs = _outputs(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = _batch(cfg)
    targets = {k: batch[k] for k in ("energy", "forces", "hessian")}
    last: Dict[str, float] = {}

    def step() -> None:
        optimizer.zero_grad()
        pred = model(dict(batch))
        loss = sum(o.calculate_loss(pred, targets) for o in outputs)
        loss.backward()
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        last["loss"] = float(loss)
        last["grad_norm"] = float(torch.stack(grads).norm()) if grads else 0.0
        optimizer.step()

    device = torch.device(cfg.device)
    reset_peak_memory(device)
    baseline, _ = peak_memory_mb(device)
    times = _repeat(step, cfg)
    result = {
        "step_s": statistics.median(times),
        "step_s_min": min(times),
        "n_atoms_total": int(batch[spk_properties.n_atoms].sum()),
        "loss": last["loss"],
        "grad_norm": last["grad_norm"],
    }
    result.update(step_memory(device, baseline))
    return result


def step_memory(device: torch.device, baseline: Optional[float]) -> Dict:
    """Peak memory of ``device`` after timed steps (MiB), what was read, and on a
    CPU the growth over ``baseline`` (the process's peak before the steps, MiB).

    Returns:
        ``peak_mem_mb``, ``peak_mem_kind`` (``cuda_allocated`` since the reset of
        that device's statistics, ``process_peak_rss``), ``peak_mem_device`` and on
        a CPU ``step_mem_mb``.
    """
    peak, kind = peak_memory_mb(device)
    out: Dict = {
        "peak_mem_mb": peak,
        "peak_mem_kind": kind,
        "peak_mem_device": str(device),
    }
    if device.type == "cpu" and peak is not None and baseline is not None:
        out["step_mem_mb"] = peak - baseline
    return out


def time_inference(cfg: BenchConfig) -> Dict[str, float]:
    """Hessians per second in eval mode for ``cfg.kind`` in ``full``/``response``."""
    model = build_model(cfg).eval()
    batch = _batch(cfg)
    times = _repeat(lambda: model(dict(batch)), cfg)
    median = statistics.median(times)
    return {"batch_s": median, "hessians_per_s": cfg.n_molecules / median}


def run_in_subprocess(
    cfg: BenchConfig, what: str = "train", timeout: float = 600
) -> Dict:
    """Run one measurement in a fresh interpreter (clean peak-memory accounting)."""
    cmd = [
        sys.executable,
        "-m",
        "schnetpack_hessian.cli.bench",
        "--worker",
        what,
        json.dumps(asdict(cfg)),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        reason = (
            "killed (out of memory?)"
            if proc.returncode < 0
            else proc.stderr.strip()[-500:]
        )
        return {"error": f"exit {proc.returncode}: {reason}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment(device: Union[str, torch.device, None] = None) -> Dict[str, str]:
    """Device, versions and thread count recorded with every result; with a CUDA
    ``device``, that device's name (else the current CUDA device's, if any)."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "schnetpack": getattr(spk, "__version__", "unknown"),
        "threads": str(torch.get_num_threads()),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        from importlib.metadata import version

        info["schnetpack"] = version("schnetpack")
        info["schnetpack_hessian"] = version("schnetpack-hessian")
    except Exception:  # metadata missing in a source checkout
        pass
    if device is not None:
        target = torch.device(device)
        info["device"] = str(target)
        if target.type == "cuda":
            info["cuda_device"] = torch.cuda.get_device_name(target)
    elif torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if not a or not b else a / b


def run_suite(
    quick: bool,
    device: str = "cpu",
    dtype: str = "float32",
    representations: Sequence[str] = ("painn",),
    log: Callable[[str], None] = print,
) -> Dict:
    """The benchmark table and the headline ratios (see module docstring)."""
    repeats = 3 if quick else 7
    base = dict(
        device=device,
        dtype=dtype,
        repeats=repeats,
        warmup=1 if quick else 2,
        min_time=2.0 if quick else 5.0,
    )
    report: Dict = {
        "environment": environment(device),
        "device": device,
        "dtype": dtype,
        "train": [],
        "inference": [],
    }
    kinds = [
        dict(kind="ef"),
        dict(kind="hvp", n_probes=1),
        dict(kind="hvp", n_probes=2),
        dict(kind="hvp", n_probes=4),
        dict(kind="rows", n_probes=2),
        dict(kind="full"),
        dict(kind="full", chunk_size=16),
    ]
    if not quick:
        kinds += [
            dict(kind="full", chunk_size=1),
            dict(kind="full", chunk_size=None),
            dict(
                kind="full",
                memory_efficient=False,
                chunk_size=None,
                label="full_retain",
            ),
            dict(kind="full", retain_mb=0.0, label="full_recompute"),
            dict(kind="full", invariance="none", label="full_allrows"),
        ]
    # the headline batch with every configuration, then (full run) how cost grows with
    # molecule size and batch size for E+F, HVP and full Hessians
    scaling = (
        []
        if quick
        else [(4, 5), (4, 10), (4, 20), (4, 30), (1, None), (4, None), (64, None)]
    )
    scaling_kinds = [dict(kind="ef"), dict(kind="hvp", n_probes=1), dict(kind="full")]
    cases = [(16, None, k) for k in kinds] + [
        (b, n, k) for b, n in scaling for k in scaling_kinds
    ]
    headline: Dict[str, Dict] = {}
    for rep in representations:
        for n_mol, n_at, extra in cases:
            cfg = BenchConfig(
                representation=rep, n_molecules=n_mol, n_atoms=n_at, **base, **extra
            )
            res = time_training_step(cfg)
            row = {
                "config": cfg.name(),
                "representation": rep,
                "n_molecules": n_mol,
                "n_atoms": n_at or "5-11",
                **res,
            }
            report["train"].append(row)
            log(
                f"train {rep:6s} B={n_mol:<3d} N={str(n_at or '5-11'):5s} {cfg.name():12s} {res['step_s'] * 1e3:9.1f} ms"
            )
            if rep == representations[0] and n_mol == 16 and n_at is None:
                headline[cfg.name()] = res
        # Response and ours on the largest batch Response survives (4 molecules)
        for kind in ("full", "response"):
            cfg = BenchConfig(
                kind=kind,
                representation=rep,
                n_molecules=4,
                **{**base, "repeats": 1 if quick else 3, "warmup": 1},
            )
            res = time_training_step(cfg)
            report["train"].append(
                {
                    "config": f"{kind}_B4",
                    "representation": rep,
                    "n_molecules": 4,
                    "n_atoms": "5-11",
                    **res,
                }
            )
            log(f"train {rep:6s} B=4   {kind:18s} {res['step_s'] * 1e3:9.1f} ms")
            if rep == representations[0]:
                headline[f"{kind}_B4"] = res
        for kind in ("full", "response"):
            cfg = BenchConfig(
                kind=kind,
                representation=rep,
                n_molecules=64,
                **{
                    **base,
                    "repeats": 1 if kind == "response" or quick else 3,
                    "warmup": 1 if kind == "full" else 0,
                },
            )
            res = time_inference(cfg)
            report["inference"].append(
                {"config": kind, "representation": rep, "n_molecules": 64, **res}
            )
            log(
                f"infer {rep:6s} B=64  {kind:18s} {res['hessians_per_s']:9.1f} Hessians/s"
            )
            if rep == representations[0]:
                headline[f"infer_{kind}"] = res
    # peak memory of E+F and full training, each in its own process
    memory = {}
    for kind in ("ef", "full"):
        cfg = BenchConfig(
            kind=kind,
            representation=representations[0],
            **{**base, "repeats": 1, "warmup": 1, "min_time": 0.0},
        )
        memory[kind] = run_in_subprocess(cfg, "train")
        log(
            f"memory {kind:5s} peak {memory[kind].get('peak_mem_mb', float('nan')):8.0f} MiB"
        )
    report["memory"] = memory
    ef = headline.get("ef", {}).get("step_s")
    report["ratios"] = {
        "hvp1_vs_ef": _ratio(headline.get("hvp1", {}).get("step_s"), ef),
        "full_vs_ef": _ratio(headline.get("full", {}).get("step_s"), ef),
        "response_vs_full": _ratio(
            headline["response_B4"]["step_s"], headline["full_B4"]["step_s"]
        ),
        "full_infer_vs_response": _ratio(
            headline["infer_full"]["hessians_per_s"],
            headline["infer_response"]["hessians_per_s"],
        ),
        "mem_full_vs_ef": _ratio(
            memory["full"].get("peak_mem_mb"), memory["ef"].get("peak_mem_mb")
        ),
    }
    return report
