r"""Exact Hessians and Hessian-vector products of SchNetPack energy models.

The math lives in small functions that take and return tensors (testable without a
model); :class:`Hessian` is the thin SchNetPack output module on top of them.

Molecules in a packed batch are independent, so one backward pass seeded with
"Cartesian row :math:`r` of every molecule" yields row :math:`r` of every molecule's
Hessian at once.  A full batch Hessian therefore needs :math:`3\max_m N_m` seeded passes,
not :math:`\sum_m 3N_m`, and only :math:`\max_m (3N_m - 6)` when the energy is invariant
under rigid motions (the six rigid directions follow from the gradient,
:mod:`schnetpack_hessian.rigid`); the passes run in chunks, vectorised
(``is_grads_batched``) on GPUs.

Layout: the full Hessian is written in SchNetPack's block layout ``(ΣN², 3, 3)``, the
layout of :class:`schnetpack.atomistic.Response`: block ``off_m + i·N_m + j`` is
d²E/dR_i dR_j of molecule ``m`` (``off_m = Σ_{m'<m} N_{m'}²``).
"""

import hashlib
import math
import warnings
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

import schnetpack.properties as spk_properties

from schnetpack_hessian import properties
from schnetpack_hessian.layout import (  # noqa: F401 (re-exported for old imports)
    atom_offsets,
    block_index,
    local_atom_index,
    molecule_index,
)
from schnetpack_hessian.precision import effective_eps
from schnetpack_hessian.plan import (  # noqa: F401 (constants re-exported)
    AUTO_CHUNK,
    CPU_VECTORIZE_MAX_PAIRS,
    PROBES,
    HessianKeys,
    HessianSchedule,
    PassPlan,
    PassSettings,
    ProbeSettings,
)
from schnetpack_hessian.packing import PackedBatch, packed_batch, packed_sizes
from schnetpack_hessian.rigid import RigidBasis, rigid_basis, rigid_products
from schnetpack_hessian.syncs import deliberate

__all__ = [
    "Hessian",
    "HessianError",
    "HessianSchedule",
    "PassPlan",
    "PassSettings",
    "PROBES",
    "was_computed",
    "energy_gradient",
    "row_seeds",
    "sample_probes",
    "hessian_rows",
    "seeded_products",
    "full_hessian",
    "products_to_blocks",
    "invariance_error",
    "grouped_arguments",
    "INVARIANCES",
]

MODES = ("full", "hvp")
#: Symmetries the full Hessian may use (see :mod:`schnetpack_hessian.rigid`).
INVARIANCES = ("auto", "rigid", "translation", "none")


def _distributed_world_size() -> int:
    """Processes of the ``torch.distributed`` group (1 when not initialised)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _ddp_finds_unused_parameters() -> bool:
    """Whether the forward in progress runs inside a ``DistributedDataParallel``
    that looks for unused parameters (False when no DDP forward is known: DDP's
    Python reducer, or a process group without DDP)."""
    from torch.nn.parallel import DistributedDataParallel

    active = getattr(DistributedDataParallel, "_active_ddp_module", None)
    return bool(getattr(active, "find_unused_parameters", False))


#: whether this process has warned that DDP may not all-reduce the gradients
_warned_about_ddp = False


def _distributed_rank() -> int:
    """This process's rank under ``torch.distributed`` (0 when not initialised)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _stream_seed(seed: Union[int, bytes], rank: int) -> int:
    """The probe seed of ``rank``: ``seed`` itself on rank 0 (the single-process
    stream), a 63-bit hash of seed and rank on the others."""
    if rank == 0 and isinstance(seed, int):
        return seed
    digest = hashlib.sha256(repr((seed, rank)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class HessianError(RuntimeError):
    """A Hessian could not be computed from the given inputs or configuration."""


# --------------------------------------------------------------------------------------
# seeds and probes
# --------------------------------------------------------------------------------------


def row_seeds(
    n_atoms: torch.Tensor,
    rows: torch.Tensor,
    dtype: torch.dtype,
    packed: Optional[PackedBatch] = None,
) -> torch.Tensor:
    """One-hot seeds selecting Cartesian row ``rows[s]`` of every molecule.

    Args:
        n_atoms: atoms per molecule, ``(B,)``.
        rows: row indices ``3·i + c`` shared by all molecules, ``(k,)``.
        dtype: floating dtype of the seeds.
        packed: the batch's bookkeeping (default: read from ``n_atoms``).

    Returns:
        ``(k, ΣN, 3)``; seed ``s`` is 1 at (atom ``rows[s] // 3``, component
        ``rows[s] % 3``) of every molecule that has that row, 0 elsewhere.
    """
    local = (packed if packed is not None else packed_sizes(n_atoms)).local
    flat = (3 * local)[None, :, None] + torch.arange(3, device=n_atoms.device)[
        None, None, :
    ]
    return (flat == rows[:, None, None]).to(dtype)


def sample_probes(
    probe: str,
    n_probes: int,
    n_atoms: torch.Tensor,
    dtype: torch.dtype,
    generator: Optional[torch.Generator] = None,
    packed: Optional[PackedBatch] = None,
) -> torch.Tensor:
    """Random probe vectors for Hessian-vector products, ``(k, ΣN, 3)``.

    Args:
        probe: ``"gaussian"`` (v ~ N(0, I)), ``"rademacher"`` (entries ±1) or ``"rows"``
            (one-hot: ``k`` distinct random Cartesian rows per molecule, cycling when
            ``k > 3N``; the HORM scheme).
        n_probes: number of probes ``k``.
        n_atoms: atoms per molecule, ``(B,)``.
        dtype: floating dtype.
        generator: optional seeded generator on the device of ``n_atoms``.
        packed: the batch's bookkeeping (default: read from ``n_atoms``).
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    device = n_atoms.device
    packed = packed if packed is not None else packed_sizes(n_atoms)
    shape = (n_probes, packed.packing.n_total, 3)
    if probe == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if probe == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=device)
        return (2 * bits - 1).to(dtype)
    # rows: a random permutation of each molecule's 3N rows, probe p takes entry p mod 3N
    n_rows = 3 * n_atoms
    max_rows = 3 * packed.packing.max_atoms
    keys = torch.rand((len(n_atoms), max_rows), generator=generator, device=device)
    keys = keys.masked_fill(
        torch.arange(max_rows, device=device)[None] >= n_rows[:, None], 2.0
    )
    perm = torch.argsort(keys, dim=1)
    p = torch.arange(n_probes, device=device)[:, None] % n_rows[None, :]  # (k, B)
    chosen = torch.gather(perm.t(), 0, p)  # (k, B) row index per molecule
    atom = packed.offsets[None, :] + torch.div(chosen, 3, rounding_mode="floor")
    probes = torch.zeros(shape, device=device, dtype=dtype)
    k_idx = torch.arange(n_probes, device=device)[:, None].expand_as(atom)
    probes[k_idx, atom, chosen % 3] = 1.0
    return probes


# --------------------------------------------------------------------------------------
# derivatives
# --------------------------------------------------------------------------------------


def energy_gradient(
    energy: torch.Tensor, positions: torch.Tensor, create_graph: bool = True
) -> torch.Tensor:
    """dE/dR of a batch of molecular energies, ``(ΣN, 3)`` (energy unit / length unit).

    Args:
        energy: molecular energies ``(B,)``.
        positions: packed positions ``(ΣN, 3)`` that require grad.
        create_graph: keep the graph of the gradient (needed for second derivatives).
    """
    (dEdR,) = torch.autograd.grad(
        energy,
        positions,
        grad_outputs=torch.ones_like(energy),
        create_graph=create_graph,
        retain_graph=True,
        allow_unused=True,
    )
    if dEdR is None:
        dEdR = torch.zeros_like(positions)
        if create_graph:
            dEdR.requires_grad_()
    return dEdR


def _seed_chunks(n_seeds: int, chunk_size: Optional[int]) -> List[slice]:
    """Consecutive slices of ``n_seeds`` seeds, ``chunk_size`` each (all when None)."""
    step = n_seeds if chunk_size is None else max(1, int(chunk_size))
    return [slice(start, start + step) for start in range(0, n_seeds, step)]


def hessian_rows(
    gradient: torch.Tensor,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    plan: PassPlan,
) -> torch.Tensor:
    """Hessian-vector products ``H v`` for a stack of seeds, ``(k, ΣN, 3)``.

    Each product is one reverse pass through the graph of ``gradient`` (= dE/dR); the
    ``k`` passes run vectorised in chunks of ``plan.chunk_size`` (all at once when
    None), or one by one without ``plan.vectorize`` (a fallback for operations without
    batching rules).

    Args:
        gradient: dE/dR ``(ΣN, 3)`` with its graph.
        positions: packed positions ``(ΣN, 3)``.
        seeds: vectors ``v``, ``(k, ΣN, 3)``.
        plan: ``create_graph`` (build a graph of the result, for training on it),
            ``chunk_size`` and ``vectorize``; ``retain_bytes`` is not used here.
    """
    k = seeds.shape[0]
    if k == 0 or not gradient.requires_grad:
        return torch.zeros_like(seeds)
    create_graph = plan.create_graph
    out: List[torch.Tensor] = []
    for part in _seed_chunks(k, plan.chunk_size):
        chunk = seeds[part]
        if plan.vectorize:
            (rows,) = torch.autograd.grad(
                gradient,
                positions,
                grad_outputs=chunk,
                retain_graph=True,
                create_graph=create_graph,
                is_grads_batched=True,
                allow_unused=True,
            )
            rows = torch.zeros_like(chunk) if rows is None else rows
        else:
            rows_list = []
            for v in chunk:
                (row,) = torch.autograd.grad(
                    gradient,
                    positions,
                    grad_outputs=v,
                    retain_graph=True,
                    create_graph=create_graph,
                    allow_unused=True,
                )
                rows_list.append(torch.zeros_like(v) if row is None else row)
            rows = torch.stack(rows_list)
        out.append(rows)
    return out[0] if len(out) == 1 else torch.cat(out, 0)


def products_to_blocks(
    products: torch.Tensor,
    directions: torch.Tensor,
    n_atoms: torch.Tensor,
    packed: Optional[PackedBatch] = None,
) -> torch.Tensor:
    """Hessians from their products with a basis, in block layout ``(ΣN², 3, 3)``.

    For every molecule, ``directions`` restricted to its atoms must hold an orthonormal
    basis of its ``3N`` coordinates (padded with zero vectors) and ``products`` the
    Hessian times each of them; then :math:`H = \sum_s (H v_s) v_s^\top`.  With the
    one-hot :func:`row_seeds` as directions this just places the computed rows.

    Args:
        products: ``H v_s``, ``(S, ΣN, 3)``.
        directions: ``v_s``, ``(S, ΣN, 3)``.
        n_atoms: atoms per molecule ``(B,)``.
        packed: the batch's bookkeeping (default: read from ``n_atoms``).
    """
    packed = packed if packed is not None else packed_sizes(n_atoms)
    _, _, j_global = packed.blocks
    return torch.einsum(
        "sna,snb->nab", products[:, packed.i_global], directions[:, j_global]
    )


def _graph_leaves(
    tensor: torch.Tensor, exclude: Sequence[torch.Tensor]
) -> List[torch.Tensor]:
    """Leaf tensors requiring grad that the graph of ``tensor`` reaches."""
    excluded = {id(t) for t in exclude}
    leaves: Dict[int, torch.Tensor] = {}
    seen = set()
    stack = [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)
        if variable is not None and id(variable) not in excluded:
            leaves[id(variable)] = variable
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return list(leaves.values())


class _MemoryBoundedRows(torch.autograd.Function):
    """Hessian-vector products whose backward re-derives them chunk by chunk.

    Forward computes ``H v_s`` for all seeds without building a second-order graph.
    Backward receives ``W_s = dL/d(H v_s)`` and back-propagates ``Σ_s ⟨W_s, H v_s⟩`` one
    chunk of seeds at a time, so only one chunk's second-order graph is alive at once:
    peak memory no longer grows with the number of seeds.  Gradients reach the
    parameters (the graph's leaves, passed as inputs) through the normal autograd
    engine, so optimisers, DDP and gradient hooks see ordinary gradients.
    """

    @staticmethod
    def forward(ctx, plan, seeds, gradient, positions, *leaves):
        ctx.save_for_backward(seeds, gradient, positions, *leaves)
        ctx.plan = plan
        return hessian_rows(
            gradient, positions, seeds, replace(plan, create_graph=False)
        )

    @staticmethod
    def backward(ctx, grad_rows):
        seeds, gradient, positions, *leaves = ctx.saved_tensors
        plan: PassPlan = ctx.plan
        step = PassPlan(create_graph=True, chunk_size=None, vectorize=plan.vectorize)
        inputs = [positions] + list(leaves)
        totals: List[Optional[torch.Tensor]] = [None] * len(inputs)
        with torch.enable_grad():
            for chunk in _seed_chunks(seeds.shape[0], plan.chunk_size):
                rows = hessian_rows(gradient, positions, seeds[chunk], step)
                phi = (rows * grad_rows[chunk]).sum()
                if not phi.requires_grad:
                    continue
                grads = torch.autograd.grad(
                    phi, inputs, retain_graph=True, allow_unused=True
                )
                for n, g in enumerate(grads):
                    if g is not None:
                        totals[n] = g if totals[n] is None else totals[n] + g
        return (None, None, None, *totals)  # plan, seeds, gradient; then inputs


class _SavedBytes:
    """Counts the bytes of the distinct storages autograd saves inside the context.

    An estimate of a graph's memory: storages that already existed (the first-order
    graph's) are counted once, the first time a graph refers to them; intermediate
    buffers and allocator overhead come on top (on the benchmark batch the process
    grew by about 2.4× the count per kept pass).
    """

    def __init__(self):
        self.nbytes = 0
        self._seen: set = set()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.nbytes += storage.nbytes()
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)


def seeded_products(
    gradient: torch.Tensor,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    plan: PassPlan,
) -> torch.Tensor:
    """:func:`hessian_rows` for training, with a bound on the memory of their graphs.

    With ``plan.create_graph`` the second-order graphs of the first chunks of seeds are
    kept for the loss backward while their saved tensors stay within
    ``plan.retain_bytes``; the products of the remaining seeds carry a memory-bounded
    graph whose backward recomputes them chunk by chunk (:class:`_MemoryBoundedRows`).
    ``retain_bytes=None`` keeps every graph (fastest, memory grows with the number of
    seeds); 0 recomputes them all.

    Returns:
        ``H v`` for every seed, ``(k, ΣN, 3)``.
    """
    k = seeds.shape[0]
    if k == 0 or not gradient.requires_grad:
        return torch.zeros_like(seeds)
    if not plan.create_graph or plan.retain_bytes is None:
        return hessian_rows(gradient, positions, seeds, plan)
    kept = PassPlan(create_graph=True, chunk_size=None, vectorize=plan.vectorize)
    parts: List[torch.Tensor] = []
    saved = _SavedBytes()
    start, last_chunk = 0, 0
    for chunk in _seed_chunks(k, plan.chunk_size):
        if saved.nbytes + last_chunk >= plan.retain_bytes:
            break
        before = saved.nbytes
        with saved.hooks():
            parts.append(hessian_rows(gradient, positions, seeds[chunk], kept))
        last_chunk = saved.nbytes - before
        start = chunk.stop
    if start < k:
        leaves = _graph_leaves(gradient, exclude=[positions])
        parts.append(
            _MemoryBoundedRows.apply(plan, seeds[start:], gradient, positions, *leaves)
        )
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def full_hessian(
    gradient: torch.Tensor,
    positions: torch.Tensor,
    n_atoms: torch.Tensor,
    plan: PassPlan,
    basis: Optional[RigidBasis] = None,
    packed: Optional[PackedBatch] = None,
) -> torch.Tensor:
    """Exact Hessians of all molecules of a packed batch in block layout ``(ΣN², 3, 3)``.

    Without ``basis``: ``3·max(N)`` seeded passes, one per Cartesian row shared by all
    molecules.  With a :class:`~schnetpack_hessian.rigid.RigidBasis` (energies
    invariant under rigid motions): passes only along its complement, ``max(3N - 6)``,
    and the rigid columns from the gradient (:func:`~schnetpack_hessian.rigid.rigid_products`).
    ``plan.retain_bytes`` bounds the memory of the training graphs
    (:func:`seeded_products`).  ``packed`` is the batch's bookkeeping (default: read
    from ``n_atoms``).
    """
    packed = packed if packed is not None else packed_sizes(n_atoms)
    if basis is None:
        n_rows = 3 * packed.packing.max_atoms
        rows = torch.arange(n_rows, device=positions.device)
        seeds = row_seeds(n_atoms, rows, positions.dtype, packed)
    else:
        seeds = basis.complement
    products = seeded_products(gradient, positions, seeds, plan)
    directions = seeds
    if basis is not None:
        rigid = rigid_products(
            gradient if plan.create_graph else gradient.detach(), basis
        )
        products = torch.cat([products, rigid])
        directions = torch.cat([seeds, basis.rigid])
    return products_to_blocks(products, directions, n_atoms, packed)


def invariance_error(
    gradient: torch.Tensor,
    positions: torch.Tensor,
    basis: RigidBasis,
    hessian: torch.Tensor,
    vectorize: bool = True,
) -> float:
    """How far an energy is from the rigid-motion relations of ``basis``.

    One seeded pass along the sum of each molecule's rigid directions, compared with
    what :func:`~schnetpack_hessian.rigid.rigid_products` predicts from the gradient;
    returns the largest deviation relative to the largest Hessian element (rounding
    level for invariant models, O(1) for e.g. an external field).
    """
    probe = basis.rigid.sum(0, keepdim=True)
    plan = PassPlan(create_graph=False, chunk_size=None, vectorize=vectorize)
    measured = hessian_rows(gradient, positions, probe, plan)
    predicted = rigid_products(gradient.detach(), basis).sum(0, keepdim=True)
    scale = hessian.detach().abs().max().clamp_min(torch.finfo(hessian.dtype).tiny)
    with deliberate("one-time invariance check"):
        return float((measured - predicted).abs().max() / scale)


# --------------------------------------------------------------------------------------
# the output module
# --------------------------------------------------------------------------------------


#: Attributes of :class:`Hessian` that hold what one process found out, with their
#: fresh values: never pickled (``torch.save`` of a model, checkpoints, deep copies),
#: so a loaded module decides them again on its own device.
_PROCESS_LOCAL: Dict[str, Any] = {"_invariance_holds": dict, "_ddp_checked": bool}

#: Constructor arguments of earlier releases, now in ``schedule`` or ``passes``.


def _schedule_from_flags(mode: str, in_training: bool, full_in_eval: bool) -> Dict:
    """The schedule that the ``in_training``/``full_in_eval`` flags of earlier
    releases meant."""
    return {
        "training": mode if in_training else "none",
        "evaluation": "full" if (mode == "full" or full_in_eval) else "hvp",
    }


#: Flat constructor arguments (and attributes) of earlier releases → (group, field).
_FLAT_ARGUMENTS = {
    "hessian_key": ("keys", "hessian"),
    "hvp_key": ("keys", "hvp"),
    "probes_key": ("keys", "probes"),
    "n_probes": ("probes", "n"),
    "probe": ("probes", "kind"),
    "seed": ("probes", "seed"),
}


def grouped_arguments(values: Mapping[str, Any]) -> Dict[str, Any]:
    """``values`` (constructor arguments or a pickled module's attributes) with the
    flat key and probe settings of earlier releases moved into ``keys`` and
    ``probes`` mappings; what is already grouped is kept.  Models saved or exported
    before the grouping load through this."""
    out = dict(values)
    groups: Dict[str, Dict[str, Any]] = {"keys": {}, "probes": {}}
    for flat, (group, field) in _FLAT_ARGUMENTS.items():
        if flat in out:
            groups[group][field] = out.pop(flat)
    for group, fields in groups.items():
        if fields or group not in out:
            out[group] = {**fields, **dict(out.get(group) or {})}
    return out


def was_computed(outputs: Mapping[str, torch.Tensor], key: str) -> bool:
    """Whether output ``key`` of ``outputs`` holds results of this call.

    The :class:`Hessian` module declares what it computed in each call with a marker
    (:func:`~schnetpack_hessian.properties.computed`) beside each of its keys; an
    output it skipped (e.g. the Hessian of an E+F baseline in training) holds an
    empty placeholder so that the output dict keeps its keys, with a False marker.  A
    value without a marker (put there by other code, or by a model pickled before
    the markers, whose ``model_outputs`` do not collect them) counts as computed
    unless it is such an empty placeholder.
    """
    value = outputs.get(key)
    if value is None:
        return False
    marker = outputs.get(properties.computed(key))
    return value.shape[0] > 0 if marker is None else marker.shape[0] == 1


class Hessian(nn.Module):
    r"""SchNetPack output module for exact Hessians or Hessian-vector products.

    Place it in ``NeuralNetworkPotential.output_modules`` after the module that writes
    the energy, with or instead of :class:`schnetpack.atomistic.Forces` (it writes the
    forces too).

    Modes:
        * ``"full"``: writes ``hessian`` ``(ΣN², 3, 3)`` (energy unit / length unit²) in
          SchNetPack's block layout, from ``max(3N - 6)`` seeded passes plus the six
          rigid-motion columns known from the forces (``3·max(N)`` passes with
          ``invariance="none"``).
        * ``"hvp"``: writes ``hessian_hvp`` ``(k, ΣN, 3)`` = :math:`H v` for ``k =
          n_probes`` probes per molecule and the probes themselves in
          ``hessian_probes`` ``(k, ΣN, 3)``; probes are redrawn at every call.

    What is computed in training and in evaluation is the ``schedule``
    (:class:`~schnetpack_hessian.plan.HessianSchedule`); ``model_outputs`` follow from
    it (:meth:`set_schedule`), and consumers ask :func:`was_computed` whether a key
    holds results in a given call.  It also writes ``_n_atoms`` so that
    :class:`~schnetpack_hessian.HessianOutput` can normalise per molecule.  In training
    mode the results keep their graph; in eval mode they are detached.  Positions must
    require grad, which :class:`~schnetpack.model.NeuralNetworkPotential` arranges
    through ``required_derivatives`` (and Lightning needs ``inference_mode=False``).
    A training forward under ``torch.distributed`` with several processes warns once
    per process unless it runs inside a ``DistributedDataParallel`` with
    ``find_unused_parameters=True`` or its model belongs to a
    :class:`~schnetpack_hessian.HessianTask` (which checks the strategy): plain DDP
    does not all-reduce the gradients of a model that differentiates its energy in
    forward.
    On a GPU it reads no device value on the host when the batch's sizes were read
    before its transfer (:class:`~schnetpack_hessian.HessianTask` does, see
    :mod:`~schnetpack_hessian.packing`); other batches cost up to three reads each.

    Args:
        mode: ``"full"`` or ``"hvp"``.
        calc_forces: write forces (``-dE/dR``) as well.
        energy_key: key of the molecular energy ``(B,)``.
        force_key: key the forces ``(ΣN, 3)`` are written to.
        keys: where the results go, a :class:`~schnetpack_hessian.plan.HessianKeys`
            or a mapping of its fields (``hessian``, ``hvp``, ``probes``; one
            ``keys:`` block in Hydra).  Default: the package's property names.
        probes: the probes of ``"hvp"`` mode, a
            :class:`~schnetpack_hessian.plan.ProbeSettings` or a mapping of its
            fields (``n`` per molecule, ``kind`` ``"gaussian"``, ``"rademacher"``
            or ``"rows"``, ``seed`` of the probe stream, None: torch's global
            generator; one ``probes:`` block in Hydra).  Default: one Gaussian probe.
        schedule: what to compute in ``training`` and ``evaluation``: ``"none"``, the
            mode's product (``True``), or ``"full"`` in evaluation also in HVP mode
            (exact Hessian metrics in validation); a
            :class:`~schnetpack_hessian.plan.HessianSchedule` or a mapping (Hydra).
            Default: the mode's product in both phases.
        invariance: symmetry of the energy the full Hessian may use: ``"rigid"``
            (translations and rotations: passes only along the ``3N - 6`` internal
            directions), ``"translation"`` (``3N - 3``; periodic cells),
            ``"none"`` (all ``3N`` rows) or ``"auto"`` (the default: rigid for
            molecules, translation when the batch has periodic boundary conditions;
            the relations are checked once per module and process with one extra
            pass, and a model that breaks them, e.g. with an external field, falls
            back to ``"none"`` with a warning; the verdict belongs to the device and
            precision it was made under and is never saved with the module, so a
            loaded or copied model checks again where it runs).  Any SchNetPack
            model of molecules without fields is rigid-motion invariant.
        passes: how the seeded passes run, a
            :class:`~schnetpack_hessian.plan.PassSettings` or a mapping of its fields
            (``chunk_size``, ``vectorize``, ``memory_efficient``, ``retain_mb``; one
            ``passes:`` block in Hydra).  The default (``retain_mb="auto"``) bounds the
            memory of training graphs at 256 MiB of saved tensors on a CPU and a
            tenth of a GPU's free memory (docs/PERFORMANCE.md).
    """

    def __init__(
        self,
        mode: str = "full",
        calc_forces: bool = True,
        energy_key: str = spk_properties.energy,
        force_key: str = spk_properties.forces,
        keys: Union[HessianKeys, Mapping[str, Any], None] = None,
        probes: Union[ProbeSettings, Mapping[str, Any], None] = None,
        schedule: Union[HessianSchedule, Mapping[str, Any], None] = None,
        invariance: str = "auto",
        passes: Union[PassSettings, Mapping[str, Any], None] = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"Hessian: mode must be one of {MODES}, got {mode!r}")
        if invariance not in INVARIANCES:
            raise ValueError(
                f"Hessian: invariance must be one of {INVARIANCES}, got {invariance!r}"
            )
        self.mode = mode
        self.calc_forces = calc_forces
        self.energy_key = energy_key
        self.force_key = force_key
        self.keys = HessianKeys.resolve(keys)
        self.probes = ProbeSettings.resolve(probes)
        self.invariance = invariance
        self.passes = PassSettings.resolve(passes)
        #: outcome of the one-time check of each symmetry in "auto" mode, in this
        #: process (not pickled, see __getstate__)
        self._invariance_holds: Dict[str, bool] = {}
        #: a HessianTask checks the DDP strategy of this process's training (set by
        #: the task; not pickled)
        self._ddp_checked = False
        self._generator: Optional[torch.Generator] = None
        #: set False to compute forces only (Hessian keys get empty placeholders),
        #: e.g. for the force calls of an optimiser driven by an ASE calculator
        self.active = True
        self.required_derivatives = [spk_properties.R]
        self.set_schedule(schedule)

    @property
    def hessian_key(self) -> str:
        """Key of the full Hessian (``keys.hessian``)."""
        return self.keys.hessian

    @property
    def hvp_key(self) -> str:
        """Key of the Hessian-vector products (``keys.hvp``)."""
        return self.keys.hvp

    @property
    def probes_key(self) -> str:
        """Key of the probe vectors (``keys.probes``)."""
        return self.keys.probes

    @property
    def n_probes(self) -> int:
        """Probes per molecule (``probes.n``)."""
        return self.probes.n

    @property
    def probe(self) -> str:
        """The probes' distribution (``probes.kind``)."""
        return self.probes.kind

    @property
    def seed(self) -> Optional[int]:
        """Seed of the probe stream (``probes.seed``)."""
        return self.probes.seed

    def __getstate__(self) -> Dict[str, Any]:
        """The pickled state holds the probe generator's state as a tensor, not the
        ``torch.Generator`` (which weights-only loading refuses, and which would not
        load on another device type): ``(device type, get_state())``.  What this
        process found out (:data:`_PROCESS_LOCAL`: the invariance verdict, made
        under this device and precision, and a HessianTask's DDP mark) is left
        out."""
        state = dict(self.__dict__)
        for name in _PROCESS_LOCAL:
            state.pop(name, None)
        generator = state.pop("_generator", None)
        state["_generator"] = None
        if generator is not None:
            state["_generator_state"] = (generator.device.type, generator.get_state())
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Unpickle modules saved by earlier releases (flat key and probe arguments
        instead of ``keys``/``probes``; flags instead of a schedule; an invariance
        verdict, dropped: the loaded module checks again); the process-local
        attributes start fresh."""
        state = dict(state)
        for name in _PROCESS_LOCAL:
            state.pop(name, None)
        if "keys" not in state:
            state = grouped_arguments(state)
            state["keys"] = HessianKeys.resolve(state["keys"])
            state["probes"] = ProbeSettings.resolve(state["probes"])
        if "schedule" not in state and "mode" in state:
            state["schedule"] = HessianSchedule.resolve(
                state["mode"],
                _schedule_from_flags(
                    state["mode"],
                    state.pop("in_training", True),
                    state.pop("full_in_eval", False),
                ),
            )
            state["passes"] = PassSettings(
                chunk_size=state.pop("chunk_size", "auto"),
                vectorize=state.pop("vectorize", None),
                memory_efficient=state.pop("memory_efficient", True),
                retain_mb=state.pop("retain_mb", 256.0),
            )
        super().__setstate__(state)
        for name, fresh in _PROCESS_LOCAL.items():
            setattr(self, name, fresh())

    def set_schedule(
        self,
        schedule: Union[HessianSchedule, Mapping[str, Any], None] = None,
        **phases: Any,
    ) -> "Hessian":
        """Set what is computed, and derive ``model_outputs`` from it.

        ``set_schedule(evaluation="full")`` switches a trained HVP or E+F model to
        exact Hessians in evaluation; call ``model.collect_outputs()`` of the
        surrounding ``AtomisticModel`` afterwards (``enable_full_hessian`` does).

        Args:
            schedule: a complete schedule (or mapping); None keeps the current one.
            **phases: ``training=...`` / ``evaluation=...`` to change one phase.
        """
        current = getattr(self, "schedule", None)
        values: Dict[str, Any] = {}
        if current is not None:
            values = {"training": current.training, "evaluation": current.evaluation}
        if schedule is not None:
            values = dict(vars(HessianSchedule.resolve(self.mode, schedule)))
        values.update(phases)
        self.schedule = HessianSchedule.resolve(self.mode, values)
        outputs = [spk_properties.n_atoms]
        if self.calc_forces:
            outputs.append(self.force_key)
        outputs += [
            k
            for key in self._derivative_keys()
            for k in (key, properties.computed(key))
        ]
        self.model_outputs = outputs
        return self

    def _derivative_keys(self) -> List[str]:
        """The Hessian, HVP and probe keys this module writes (each with a marker)."""
        keys = [self.hessian_key] if self.schedule.writes_full else []
        if self.mode == "hvp":
            keys += [self.hvp_key, self.probes_key]
        return keys

    def _probe_generator(self, device: torch.device) -> Optional[torch.Generator]:
        """The seeded probe generator on ``device``, made on first use.

        Under ``torch.distributed`` each rank draws its own stream (rank 0 the
        single-process one), so that the ranks' probes differ; a generator state
        restored from a checkpoint continues on rank 0 and seeds the other ranks'
        streams (a checkpoint holds rank 0's state only).
        """
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            rank = _distributed_rank()
            self._generator = torch.Generator(device=device)
            saved = self.__dict__.pop("_generator_state", None)
            if saved is not None and saved[0] == torch.device(device).type:
                if rank == 0:
                    self._generator.set_state(saved[1])  # the stream continues
                else:
                    state = bytes(saved[1].numpy().tobytes())
                    self._generator.manual_seed(_stream_seed(state, rank))
            else:
                self._generator.manual_seed(_stream_seed(self.seed, rank))
        return self._generator

    def draw_probes(
        self,
        inputs: Dict[str, torch.Tensor],
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """New probes ``(k, ΣN, 3)`` for this batch in the module's scheme, from
        ``generator`` or else the module's own stream (what a training forward in
        ``mode="hvp"`` draws)."""
        positions = inputs[spk_properties.R]
        if generator is None:
            generator = self._probe_generator(positions.device)
        return sample_probes(
            self.probe,
            self.n_probes,
            inputs[spk_properties.n_atoms],
            positions.dtype,
            generator,
            packed_batch(inputs),
        )

    def probes_for(self, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The probes ``(k, ΣN, 3)`` of this batch's products: the batch's
        :data:`~schnetpack_hessian.properties.hessian_label_probes` ``(ΣN, k, 3)``
        when it holds curvature labels along given probes (stored or a teacher's),
        else drawn (:meth:`draw_probes`).

        Raises:
            HessianError: given probes that do not match the batch's atoms.
        """
        given = inputs.get(properties.hessian_label_probes)
        if given is None:
            return self.draw_probes(inputs)
        positions = inputs[spk_properties.R]
        if (
            given.dim() != 3
            or given.shape[0] != positions.shape[0]
            or given.shape[2] != 3
        ):
            raise HessianError(
                f"Hessian: '{properties.hessian_label_probes}' has shape "
                f"{tuple(given.shape)}, expected (ΣN, k, 3) with ΣN = "
                f"{positions.shape[0]}"
            )
        return given.transpose(0, 1).to(positions.dtype).contiguous()

    def _warn_about_unchecked_ddp(self) -> None:
        """Warn once per process when training runs under ``torch.distributed`` with
        several processes, outside :class:`~schnetpack_hessian.HessianTask` (which
        refuses DDP without ``find_unused_parameters=True``) and not inside a DDP
        forward known to look for unused parameters."""
        global _warned_about_ddp
        if _warned_about_ddp or self._ddp_checked:
            return
        world_size = _distributed_world_size()
        if world_size < 2 or _ddp_finds_unused_parameters():
            return
        _warned_about_ddp = True
        warnings.warn(
            f"Hessian: training under torch.distributed ({world_size} processes) "
            "outside HessianTask: DistributedDataParallel needs "
            "find_unused_parameters=True for models that differentiate the energy in "
            "forward (forces, Hessians), otherwise it does not all-reduce their "
            "gradients and each rank trains on its own shard. Use "
            "strategy='ddp_find_unused_parameters_true' (spktrain: "
            "trainer=ddp_hessian), or schnetpack_hessian.HessianTask, which checks "
            "the strategy.",
            stacklevel=2,
        )

    def _check_inputs(self, inputs: Dict[str, torch.Tensor]) -> None:
        if self.energy_key not in inputs:
            raise HessianError(
                f"Hessian: the inputs have no energy under '{self.energy_key}' "
                f"(keys: {sorted(inputs)}); place Hessian after the output module that "
                "writes the energy, or set energy_key"
            )
        positions = inputs[spk_properties.R]
        if not positions.requires_grad:
            raise HessianError(
                "Hessian: positions ('_positions') do not require grad. Put Hessian in "
                "NeuralNetworkPotential.output_modules (so required_derivatives holds "
                "'_positions'), and run with gradients enabled (torch.enable_grad(); "
                "Lightning: trainer inference_mode=False)."
            )
        if not torch.is_grad_enabled():
            raise HessianError(
                "Hessian: gradients are disabled (torch.no_grad or inference mode); "
                "Hessians need autograd: use torch.enable_grad() / inference_mode=False"
            )

    def _placeholders(self, positions: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Empty placeholders for every derivative output (replaced by what this
        call computes; see :func:`was_computed`)."""
        out = {}
        if self.schedule.writes_full:
            out[self.hessian_key] = positions.new_zeros((0, 3, 3))
        if self.mode == "hvp":
            empty = positions.new_zeros((0,) + tuple(positions.shape))
            out[self.hvp_key] = empty
            out[self.probes_key] = empty
        return out

    def _symmetry(self, inputs: Dict[str, torch.Tensor]) -> str:
        """The symmetry to use for this batch: ``rigid``, ``translation`` or ``none``
        (periodic boundaries from the batch's host sizes, :mod:`..packing`)."""
        if self.invariance != "auto":
            return self.invariance
        periodic = packed_batch(inputs).packing.periodic
        symmetry = "translation" if periodic else "rigid"
        return symmetry if self._invariance_holds.get(symmetry, True) else "none"

    def _full_hessian(
        self,
        inputs: Dict[str, torch.Tensor],
        gradient: torch.Tensor,
        plan: PassPlan,
    ) -> torch.Tensor:
        """The full Hessian ``(ΣN², 3, 3)``, using the energy's symmetry."""
        positions = inputs[spk_properties.R]
        n_atoms = inputs[spk_properties.n_atoms]
        packed = packed_batch(inputs)
        symmetry = self._symmetry(inputs)
        basis = (
            None
            if symmetry == "none"
            else rigid_basis(positions, n_atoms, symmetry == "rigid", packed)
        )
        hessian = full_hessian(gradient, positions, n_atoms, plan, basis, packed)
        if (
            basis is not None
            and self.invariance == "auto"
            and symmetry not in self._invariance_holds
        ):
            error = invariance_error(
                gradient, positions, basis, hessian, plan.vectorize
            )
            # the roundoff in use: TF32/autocast make it coarser than the dtype's
            eps = effective_eps(positions.device, positions.dtype)
            tolerance = 10.0 * math.sqrt(eps)
            self._invariance_holds[symmetry] = error <= tolerance
            if error > tolerance:
                warnings.warn(
                    f"Hessian: the energy is not invariant under {symmetry} motions "
                    f"(relative deviation {error:.1e} > {tolerance:.1e}), e.g. an "
                    "external field or a position-dependent term; computing all 3N "
                    "rows from now on (set invariance='none' to skip this check)",
                    stacklevel=2,
                )
                hessian = full_hessian(gradient, positions, n_atoms, plan, None, packed)
        return hessian

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        self._check_inputs(inputs)
        energy = inputs[self.energy_key]
        positions = inputs[spk_properties.R]
        training = self.training
        if training:
            self._warn_about_unchecked_ddp()

        gradient = energy_gradient(energy, positions, create_graph=True)
        if self.calc_forces:
            forces = -gradient
            inputs[self.force_key] = forces if training else forces.detach()

        compute = self.schedule.computes(training) if self.active else "none"
        results = self._placeholders(positions)
        computed = {}
        if compute != "none":
            plan = self.passes.plan(inputs, create_graph=training)
            if compute == "full":
                computed[self.hessian_key] = self._full_hessian(inputs, gradient, plan)
            if self.mode == "hvp":
                probes = self.probes_for(inputs)
                computed[self.hvp_key] = hessian_rows(gradient, positions, probes, plan)
                computed[self.probes_key] = probes
        results.update(computed)
        for key, value in results.items():
            inputs[key] = (
                value if training or key == self.probes_key else value.detach()
            )
            inputs[properties.computed(key)] = positions.new_ones(
                int(key in computed), dtype=torch.bool
            )
        return inputs
