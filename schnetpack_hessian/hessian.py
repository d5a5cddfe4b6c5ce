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

import math
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

import schnetpack.properties as spk_properties

from schnetpack_hessian import properties
from schnetpack_hessian.rigid import RigidBasis, rigid_basis, rigid_products

__all__ = [
    "Hessian",
    "HessianError",
    "PROBES",
    "energy_gradient",
    "row_seeds",
    "sample_probes",
    "hessian_rows",
    "seeded_products",
    "full_hessian",
    "products_to_blocks",
    "invariance_error",
    "INVARIANCES",
]

#: Probe distributions accepted by :func:`sample_probes`.
PROBES = ("gaussian", "rademacher", "rows")
MODES = ("full", "hvp")
#: On CPUs, vectorising the seeds pays off only for batches with few atom pairs, where
#: per-operation overhead dominates (e.g. 4 small molecules, 122 pairs: 2× faster);
#: above this, vmap's larger intermediates make it slower (16 molecules, 860 pairs).
CPU_VECTORIZE_MAX_PAIRS = 512
#: Seeds per vectorised pass and per step of the memory-bounded backward for
#: ``chunk_size="auto"``: (vectorised, looped).
AUTO_CHUNK = (16, 4)
#: Symmetries the full Hessian may use (see :mod:`schnetpack_hessian.rigid`).
INVARIANCES = ("auto", "rigid", "translation", "none")


class HessianError(RuntimeError):
    """A Hessian could not be computed from the given inputs or configuration."""


# --------------------------------------------------------------------------------------
# index bookkeeping for packed batches
# --------------------------------------------------------------------------------------


def atom_offsets(n_atoms: torch.Tensor) -> torch.Tensor:
    """Index of each molecule's first atom in the packed batch, shape ``(B,)``."""
    return torch.cumsum(n_atoms, 0) - n_atoms


def molecule_index(n_atoms: torch.Tensor) -> torch.Tensor:
    """Molecule of every atom of a packed batch, shape ``(ΣN,)`` (SchNetPack's idx_m)."""
    return torch.repeat_interleave(
        torch.arange(len(n_atoms), device=n_atoms.device), n_atoms
    )


def local_atom_index(n_atoms: torch.Tensor) -> torch.Tensor:
    """Index of every atom inside its own molecule, shape ``(ΣN,)``."""
    idx_m = molecule_index(n_atoms)
    return (
        torch.arange(int(n_atoms.sum()), device=n_atoms.device)
        - atom_offsets(n_atoms)[idx_m]
    )


def block_index(
    n_atoms: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of the ``ΣN²`` Hessian blocks of a packed batch.

    Returns:
        ``(block_m, i_local, j_global)``, each ``(ΣN²,)``: the molecule of every block,
        the local index of its row atom ``i`` and the packed index of its column atom
        ``j``.
    """
    device = n_atoms.device
    n_sq = n_atoms * n_atoms
    block_m = torch.repeat_interleave(torch.arange(len(n_atoms), device=device), n_sq)
    k = (
        torch.arange(int(n_sq.sum()), device=device)
        - (torch.cumsum(n_sq, 0) - n_sq)[block_m]
    )
    n_b = n_atoms[block_m]
    i_local = torch.div(k, n_b, rounding_mode="floor")
    j_global = atom_offsets(n_atoms)[block_m] + k - i_local * n_b
    return block_m, i_local, j_global


# --------------------------------------------------------------------------------------
# seeds and probes
# --------------------------------------------------------------------------------------


def row_seeds(
    n_atoms: torch.Tensor, rows: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """One-hot seeds selecting Cartesian row ``rows[s]`` of every molecule.

    Args:
        n_atoms: atoms per molecule, ``(B,)``.
        rows: row indices ``3·i + c`` shared by all molecules, ``(k,)``.
        dtype: floating dtype of the seeds.

    Returns:
        ``(k, ΣN, 3)``; seed ``s`` is 1 at (atom ``rows[s] // 3``, component
        ``rows[s] % 3``) of every molecule that has that row, 0 elsewhere.
    """
    local = local_atom_index(n_atoms)
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
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    device = n_atoms.device
    n_total = int(n_atoms.sum())
    shape = (n_probes, n_total, 3)
    if probe == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if probe == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=device)
        return (2 * bits - 1).to(dtype)
    # rows: a random permutation of each molecule's 3N rows, probe p takes entry p mod 3N
    n_rows = 3 * n_atoms
    max_rows = int(n_rows.max())
    keys = torch.rand((len(n_atoms), max_rows), generator=generator, device=device)
    keys = keys.masked_fill(
        torch.arange(max_rows, device=device)[None] >= n_rows[:, None], 2.0
    )
    perm = torch.argsort(keys, dim=1)
    p = torch.arange(n_probes, device=device)[:, None] % n_rows[None, :]  # (k, B)
    chosen = torch.gather(perm.t(), 0, p)  # (k, B) row index per molecule
    atom = atom_offsets(n_atoms)[None, :] + torch.div(chosen, 3, rounding_mode="floor")
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
    create_graph: bool,
    chunk_size: Optional[int] = None,
    vectorize: bool = True,
) -> torch.Tensor:
    """Hessian-vector products ``H v`` for a stack of seeds, ``(k, ΣN, 3)``.

    Each product is one reverse pass through the graph of ``gradient`` (= dE/dR); the
    ``k`` passes run vectorised in chunks of ``chunk_size`` (all at once when None).

    Args:
        gradient: dE/dR ``(ΣN, 3)`` with its graph.
        positions: packed positions ``(ΣN, 3)``.
        seeds: vectors ``v``, ``(k, ΣN, 3)``.
        create_graph: build a graph of the result (for training on it).
        chunk_size: seeds per vectorised pass.
        vectorize: use ``is_grads_batched``; False loops over seeds (a fallback for
            operations without batching rules).
    """
    k = seeds.shape[0]
    if k == 0 or not gradient.requires_grad:
        return torch.zeros_like(seeds)
    out: List[torch.Tensor] = []
    for part in _seed_chunks(k, chunk_size):
        chunk = seeds[part]
        if vectorize:
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
    products: torch.Tensor, directions: torch.Tensor, n_atoms: torch.Tensor
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
    """
    block_m, i_local, j_global = block_index(n_atoms)
    i_global = atom_offsets(n_atoms)[block_m] + i_local
    return torch.einsum("sna,snb->nab", products[:, i_global], directions[:, j_global])


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
    def forward(ctx, chunk_size, vectorize, seeds, gradient, positions, *leaves):
        ctx.save_for_backward(seeds, gradient, positions, *leaves)
        ctx.chunk_size = chunk_size
        ctx.vectorize = vectorize
        return hessian_rows(gradient, positions, seeds, False, chunk_size, vectorize)

    @staticmethod
    def backward(ctx, grad_rows):
        seeds, gradient, positions, *leaves = ctx.saved_tensors
        inputs = [positions] + list(leaves)
        totals: List[Optional[torch.Tensor]] = [None] * len(inputs)
        with torch.enable_grad():
            for chunk in _seed_chunks(seeds.shape[0], ctx.chunk_size):
                rows = hessian_rows(
                    gradient, positions, seeds[chunk], True, None, ctx.vectorize
                )
                phi = (rows * grad_rows[chunk]).sum()
                if not phi.requires_grad:
                    continue
                grads = torch.autograd.grad(
                    phi, inputs, retain_graph=True, allow_unused=True
                )
                for n, g in enumerate(grads):
                    if g is not None:
                        totals[n] = g if totals[n] is None else totals[n] + g
        return (None, None, None, None, *totals)


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
    create_graph: bool,
    chunk_size: Optional[int] = None,
    vectorize: bool = True,
    retain_bytes: Optional[int] = None,
) -> torch.Tensor:
    """:func:`hessian_rows` for training, with a bound on the memory of their graphs.

    With ``create_graph`` the second-order graphs of the first chunks of seeds are kept
    for the loss backward while their saved tensors stay within ``retain_bytes``; the
    products of the remaining seeds carry a memory-bounded graph whose backward
    recomputes them chunk by chunk (:class:`_MemoryBoundedRows`).  ``None`` keeps every
    graph (fastest, memory grows with the number of seeds); 0 recomputes them all.

    Returns:
        ``H v`` for every seed, ``(k, ΣN, 3)``.
    """
    k = seeds.shape[0]
    if k == 0 or not gradient.requires_grad:
        return torch.zeros_like(seeds)
    if not create_graph or retain_bytes is None:
        return hessian_rows(
            gradient, positions, seeds, create_graph, chunk_size, vectorize
        )
    parts: List[torch.Tensor] = []
    saved = _SavedBytes()
    start, last_chunk = 0, 0
    for chunk in _seed_chunks(k, chunk_size):
        if saved.nbytes + last_chunk >= retain_bytes:
            break
        before = saved.nbytes
        with saved.hooks():
            parts.append(
                hessian_rows(gradient, positions, seeds[chunk], True, None, vectorize)
            )
        last_chunk = saved.nbytes - before
        start = chunk.stop
    if start < k:
        leaves = _graph_leaves(gradient, exclude=[positions])
        parts.append(
            _MemoryBoundedRows.apply(
                chunk_size, vectorize, seeds[start:], gradient, positions, *leaves
            )
        )
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def full_hessian(
    gradient: torch.Tensor,
    positions: torch.Tensor,
    n_atoms: torch.Tensor,
    create_graph: bool,
    chunk_size: Optional[int] = None,
    vectorize: bool = True,
    retain_bytes: Optional[int] = None,
    basis: Optional[RigidBasis] = None,
) -> torch.Tensor:
    """Exact Hessians of all molecules of a packed batch in block layout ``(ΣN², 3, 3)``.

    Without ``basis``: ``3·max(N)`` seeded passes, one per Cartesian row shared by all
    molecules.  With a :class:`~schnetpack_hessian.rigid.RigidBasis` (energies
    invariant under rigid motions): passes only along its complement, ``max(3N - 6)``,
    and the rigid columns from the gradient (:func:`~schnetpack_hessian.rigid.rigid_products`).
    ``retain_bytes`` bounds the memory of the training graphs (:func:`seeded_products`).
    """
    if basis is None:
        n_rows = 3 * int(n_atoms.max())
        seeds = row_seeds(
            n_atoms, torch.arange(n_rows, device=positions.device), positions.dtype
        )
    else:
        seeds = basis.complement
    products = seeded_products(
        gradient, positions, seeds, create_graph, chunk_size, vectorize, retain_bytes
    )
    directions = seeds
    if basis is not None:
        rigid = rigid_products(gradient if create_graph else gradient.detach(), basis)
        products = torch.cat([products, rigid])
        directions = torch.cat([seeds, basis.rigid])
    return products_to_blocks(products, directions, n_atoms)


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
    measured = hessian_rows(gradient, positions, probe, False, None, vectorize)
    predicted = rigid_products(gradient.detach(), basis).sum(0, keepdim=True)
    scale = hessian.detach().abs().max().clamp_min(torch.finfo(hessian.dtype).tiny)
    return float((measured - predicted).abs().max() / scale)


# --------------------------------------------------------------------------------------
# the output module
# --------------------------------------------------------------------------------------


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

    It also writes ``_n_atoms`` so that :class:`~schnetpack_hessian.HessianOutput` can
    normalise per molecule.  In training mode the results keep their graph; in eval mode
    they are detached (the model's parameters get no gradient).  Positions must require
    grad, which :class:`~schnetpack.model.NeuralNetworkPotential` arranges through
    ``required_derivatives`` (and Lightning needs ``inference_mode=False``).

    Args:
        mode: ``"full"`` or ``"hvp"``.
        energy_key: key of the molecular energy ``(B,)``.
        force_key: key the forces ``(ΣN, 3)`` are written to.
        calc_forces: write forces (``-dE/dR``) as well.
        hessian_key: key of the full Hessian.
        hvp_key: key of the Hessian-vector products.
        probes_key: key of the probe vectors.
        n_probes: probes per molecule in ``"hvp"`` mode.
        probe: ``"gaussian"``, ``"rademacher"`` or ``"rows"``.
        chunk_size: seeds per vectorised pass, and seeds per step of the
            memory-efficient backward (None: all at once; ``"auto"``, the default:
            16 when vectorising, else 4).
        memory_efficient: in training with ``mode="full"``, bound the memory of the
            second-order graphs: keep them while they fit in ``retain_mb`` and
            back-propagate the rest chunk by chunk, recomputing each chunk's graph in
            the backward (peak memory independent of the number of seeds, at the
            price of one more pass per recomputed seed).  False keeps every graph.
        retain_mb: MiB of saved tensors (counted with autograd's saved-tensor hooks;
            the process grows by about 2.4× this) that the graphs kept from the
            forward pass may hold with ``memory_efficient``; None keeps all, 0
            recomputes all.  The default 256 keeps every graph of small batches (the
            fastest) and a full-Hessian training step of 16 molecules at ~2.9× the
            E+F step's peak memory (docs/PERFORMANCE.md).
        full_in_eval: in ``"hvp"`` mode, also write the full Hessian when not training,
            so that validation reports exact Hessian metrics (in training the key then
            holds an empty ``(0, 3, 3)`` tensor).
        in_training: compute second derivatives in training mode; False trains on
            energy/forces only and computes Hessians only for evaluation (E and E+F
            baselines that still report Hessian errors); the Hessian keys then hold
            empty placeholders during training.
        invariance: symmetry of the energy the full Hessian may use: ``"rigid"``
            (translations and rotations: passes only along the ``3N - 6`` internal
            directions), ``"translation"`` (``3N - 3``; periodic cells),
            ``"none"`` (all ``3N`` rows) or ``"auto"`` (the default: rigid for
            molecules, translation when the batch has periodic boundary conditions;
            the relations are checked once per module with one extra pass, and a
            model that breaks them, e.g. with an external field, falls back to
            ``"none"`` with a warning).  Any SchNetPack model of molecules without
            fields is rigid-motion invariant.
        seed: seed of the probe generator (None: torch's global generator).
        vectorize: vectorise the seeded passes with ``is_grads_batched``; None (the
            default) vectorises on GPUs, and on CPUs only batches with at most
            ``CPU_VECTORIZE_MAX_PAIRS`` atom pairs: on larger ones vmap's bigger
            intermediates make the passes slower (see docs/PERFORMANCE.md).
    """

    def __init__(
        self,
        mode: str = "full",
        energy_key: str = spk_properties.energy,
        force_key: str = spk_properties.forces,
        calc_forces: bool = True,
        hessian_key: str = properties.hessian,
        hvp_key: str = properties.hessian_hvp,
        probes_key: str = properties.hessian_probes,
        n_probes: int = 1,
        probe: str = "gaussian",
        chunk_size: Union[int, str, None] = "auto",
        memory_efficient: bool = True,
        retain_mb: Optional[float] = 256.0,
        full_in_eval: bool = False,
        in_training: bool = True,
        seed: Optional[int] = None,
        vectorize: Optional[bool] = None,
        invariance: str = "auto",
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"Hessian: mode must be one of {MODES}, got {mode!r}")
        if probe not in PROBES:
            raise ValueError(f"Hessian: probe must be one of {PROBES}, got {probe!r}")
        if n_probes < 1:
            raise ValueError(f"Hessian: n_probes must be >= 1, got {n_probes}")
        if invariance not in INVARIANCES:
            raise ValueError(
                f"Hessian: invariance must be one of {INVARIANCES}, got {invariance!r}"
            )
        if retain_mb is not None and retain_mb < 0:
            raise ValueError(
                f"Hessian: retain_mb must be None or >= 0, got {retain_mb}"
            )
        if (
            chunk_size is not None
            and chunk_size != "auto"
            and (not isinstance(chunk_size, int) or chunk_size < 1)
        ):
            raise ValueError(
                f"Hessian: chunk_size must be 'auto', None or >= 1, got {chunk_size!r}"
            )
        self.mode = mode
        self.energy_key = energy_key
        self.force_key = force_key
        self.calc_forces = calc_forces
        self.hessian_key = hessian_key
        self.hvp_key = hvp_key
        self.probes_key = probes_key
        self.n_probes = n_probes
        self.probe = probe
        self.chunk_size = chunk_size
        self.memory_efficient = memory_efficient
        self.retain_mb = retain_mb
        self.full_in_eval = full_in_eval
        self.in_training = in_training
        self.seed = seed
        self.vectorize = vectorize
        self.invariance = invariance
        #: outcome of the one-time check of each symmetry in "auto" mode
        self._invariance_holds: Dict[str, bool] = {}
        self._generator: Optional[torch.Generator] = None
        #: set False to compute forces only (Hessian keys get empty placeholders),
        #: e.g. for the force calls of an optimiser driven by an ASE calculator
        self.active = True

        self.model_outputs = [spk_properties.n_atoms]
        if calc_forces:
            self.model_outputs.append(force_key)
        if mode == "full" or full_in_eval:
            self.model_outputs.append(hessian_key)
        if mode == "hvp":
            self.model_outputs += [hvp_key, probes_key]
        self.required_derivatives = [spk_properties.R]

    def _probe_generator(self, device: torch.device) -> Optional[torch.Generator]:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

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

    def _placeholders(
        self, inputs: Dict[str, torch.Tensor], positions: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """Empty tensors under the Hessian keys (nothing computed in training)."""
        if self.hessian_key in self.model_outputs:
            inputs[self.hessian_key] = positions.new_zeros((0, 3, 3))
        if self.mode == "hvp":
            empty = positions.new_zeros((0,) + tuple(positions.shape))
            inputs[self.hvp_key] = empty
            inputs[self.probes_key] = empty
        return inputs

    def _symmetry(self, inputs: Dict[str, torch.Tensor]) -> str:
        """The symmetry to use for this batch: ``rigid``, ``translation`` or ``none``."""
        if self.invariance != "auto":
            return self.invariance
        pbc = inputs.get(spk_properties.pbc)
        periodic = pbc is not None and bool(pbc.any())
        symmetry = "translation" if periodic else "rigid"
        return symmetry if self._invariance_holds.get(symmetry, True) else "none"

    def _full_hessian(
        self,
        inputs: Dict[str, torch.Tensor],
        gradient: torch.Tensor,
        training: bool,
        vectorize: bool,
        chunk_size: Optional[int],
    ) -> torch.Tensor:
        """The full Hessian ``(ΣN², 3, 3)``, using the energy's symmetry."""
        positions = inputs[spk_properties.R]
        n_atoms = inputs[spk_properties.n_atoms]
        symmetry = self._symmetry(inputs)
        basis = (
            None
            if symmetry == "none"
            else rigid_basis(positions, n_atoms, rotations=symmetry == "rigid")
        )

        def compute(basis: Optional[RigidBasis]) -> torch.Tensor:
            return full_hessian(
                gradient, positions, n_atoms, training, chunk_size, vectorize,
                self._retain_bytes(), basis,
            )  # fmt: skip

        hessian = compute(basis)
        if (
            basis is not None
            and self.invariance == "auto"
            and symmetry not in self._invariance_holds
        ):
            error = invariance_error(gradient, positions, basis, hessian, vectorize)
            tolerance = 10.0 * math.sqrt(torch.finfo(positions.dtype).eps)
            self._invariance_holds[symmetry] = error <= tolerance
            if error > tolerance:
                warnings.warn(
                    f"Hessian: the energy is not invariant under {symmetry} motions "
                    f"(relative deviation {error:.1e} > {tolerance:.1e}), e.g. an "
                    "external field or a position-dependent term; computing all 3N "
                    "rows from now on (set invariance='none' to skip this check)",
                    stacklevel=2,
                )
                hessian = compute(None)
        return hessian

    def _retain_bytes(self) -> Optional[int]:
        if not self.memory_efficient or self.retain_mb is None:
            return None
        return int(self.retain_mb * 2**20)

    def _pass_settings(
        self, inputs: Dict[str, torch.Tensor]
    ) -> Tuple[bool, Optional[int]]:
        """Whether to vectorise the seeded passes of this batch, and their chunk size."""
        vectorize = self.vectorize
        if vectorize is None:
            if inputs[spk_properties.R].device.type != "cpu":
                vectorize = True
            else:
                idx_i = inputs.get(spk_properties.idx_i)
                n_atoms = inputs[spk_properties.n_atoms]
                n_pairs = (
                    int(idx_i.shape[0])
                    if idx_i is not None
                    else int((n_atoms**2).sum())
                )
                vectorize = n_pairs <= CPU_VECTORIZE_MAX_PAIRS
        chunk_size = self.chunk_size
        if chunk_size == "auto":
            chunk_size = AUTO_CHUNK[0] if vectorize else AUTO_CHUNK[1]
        return vectorize, chunk_size

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        self._check_inputs(inputs)
        energy = inputs[self.energy_key]
        positions = inputs[spk_properties.R]
        n_atoms = inputs[spk_properties.n_atoms]
        training = self.training
        vectorize, chunk_size = self._pass_settings(inputs)

        gradient = energy_gradient(energy, positions, create_graph=True)
        if self.calc_forces:
            forces = -gradient
            inputs[self.force_key] = forces if training else forces.detach()

        if (training and not self.in_training) or not self.active:
            return self._placeholders(inputs, positions)

        if self.mode == "full" or (self.full_in_eval and not training):
            hessian = self._full_hessian(
                inputs, gradient, training, vectorize, chunk_size
            )
            inputs[self.hessian_key] = hessian if training else hessian.detach()
        elif self.full_in_eval:
            # listed in model_outputs for evaluation; zero blocks mean "not computed"
            inputs[self.hessian_key] = positions.new_zeros((0, 3, 3))

        if self.mode == "hvp":
            probes = sample_probes(
                self.probe,
                self.n_probes,
                n_atoms,
                positions.dtype,
                self._probe_generator(positions.device),
            )
            hvp = hessian_rows(
                gradient, positions, probes, training, chunk_size, vectorize
            )
            inputs[self.hvp_key] = hvp if training else hvp.detach()
            inputs[self.probes_key] = probes
        return inputs
