"""The bookkeeping of a packed batch, done once: sizes on the host, indices on the device.

A GPU training step must not read device values on the host
(:mod:`schnetpack_hessian.syncs`), yet the Hessian module and its loss need shapes
that depend on the batch: ``ΣN``, ``ΣN²``, the largest molecule, the number of
internal directions.  They all follow from sizes the collate step knows on the host.
:class:`Packing` holds them as Python ints.  :class:`~schnetpack_hessian.HessianTask`
builds it from the collated CPU batch before the transfer to the device and
registers it for the transferred ``_n_atoms`` tensor (:func:`register_packing`);
:func:`packed_batch` then gives the module and the loss the same
:class:`PackedBatch`: these sizes, and the device index tensors computed once from
them with device operations only.

A batch nobody registered (a plain ``AtomisticTask``, a direct model call) gets its
sizes read from its own tensors: free for CPU tensors, a host synchronisation per
batch on a device.  Only the sizes and flags are kept for it, never its positions
(a calculator may move the atoms of the same batch between calls).
"""

import weakref
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch.utils.weak import WeakIdKeyDictionary

import schnetpack.properties as spk_properties

from schnetpack_hessian.layout import atom_offsets, block_index, molecule_index

__all__ = [
    "Packing",
    "PackedBatch",
    "register_packing",
    "registered",
    "packed_batch",
    "packed_sizes",
]


@dataclass(frozen=True)
class Packing:
    """Host-side sizes of a packed batch (reading them never waits for a device).

    Attributes:
        n_atoms: atoms per molecule.
        periodic: whether any molecule has periodic boundary conditions (None:
            unknown, the batch's ``_pbc`` was not seen).
        positions: the batch's positions ``(ΣN, 3)`` on the host (Å), or None; the
            number of internal directions of the rigid-motion basis depends on the
            geometry (linear molecules), see
            :func:`~schnetpack_hessian.rigid.complement_width`.
    """

    n_atoms: Tuple[int, ...]
    periodic: Optional[bool] = None
    positions: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)
    #: values derived from the host data on first use (e.g. the complement width)
    derived: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_molecules(self) -> int:
        return len(self.n_atoms)

    @property
    def n_total(self) -> int:
        """``ΣN``, atoms in the batch."""
        return sum(self.n_atoms)

    @property
    def max_atoms(self) -> int:
        """Atoms of the largest molecule."""
        return max(self.n_atoms, default=0)

    @property
    def n_blocks(self) -> int:
        """``ΣN²``, 3×3 Hessian blocks of the batch."""
        return sum(n * n for n in self.n_atoms)

    @classmethod
    def from_batch(
        cls, batch: Mapping[str, torch.Tensor], keep_positions: bool = False
    ) -> "Packing":
        """The sizes of a batch, read from its tensors: free for a host (CPU) batch, a
        host synchronisation for each tensor on a device.

        Args:
            batch: a SchNetPack batch with ``_n_atoms`` and optionally ``_pbc`` and
                ``_positions``.
            keep_positions: keep the positions (when on the CPU) for the host's
                count of internal directions; only for a batch whose positions do
                not change afterwards (a collated training batch).
        """
        pbc = batch.get(spk_properties.pbc)
        positions = batch.get(spk_properties.R)
        keep = (
            keep_positions and positions is not None and positions.device.type == "cpu"
        )
        return cls(
            n_atoms=tuple(batch[spk_properties.n_atoms].tolist()),
            periodic=False if pbc is None else bool(pbc.any()),
            positions=positions.detach() if keep else None,
        )


class PackedBatch:
    """The bookkeeping of one batch: its :class:`Packing` and device index tensors,
    each built on first use from the device ``n_atoms`` with the host sizes (no
    device value is read).

    Attributes:
        packing: the host sizes.
    """

    def __init__(
        self,
        packing: Packing,
        n_atoms: torch.Tensor,
        idx_m: Optional[torch.Tensor] = None,
    ):
        self.packing = packing
        # weak: the registry maps n_atoms to this object and must not keep it alive
        self._n_atoms = weakref.ref(n_atoms)
        self._idx_m = idx_m

    @property
    def n_atoms(self) -> torch.Tensor:
        """Atoms per molecule on the device, ``(B,)``."""
        n_atoms = self._n_atoms()
        if n_atoms is None:
            raise RuntimeError("PackedBatch: its batch's _n_atoms tensor is gone")
        return n_atoms

    @property
    def device(self) -> torch.device:
        return self.n_atoms.device

    @cached_property
    def offsets(self) -> torch.Tensor:
        """Packed index of each molecule's first atom, ``(B,)``."""
        return atom_offsets(self.n_atoms)

    @cached_property
    def idx_m(self) -> torch.Tensor:
        """Molecule of every atom, ``(ΣN,)`` (the collate step's ``_idx_m`` if given)."""
        if self._idx_m is not None:
            return self._idx_m
        return molecule_index(self.n_atoms, self.packing.n_total)

    @cached_property
    def local(self) -> torch.Tensor:
        """Index of every atom inside its molecule, ``(ΣN,)``."""
        arange = torch.arange(self.packing.n_total, device=self.device)
        return arange - self.offsets[self.idx_m]

    @cached_property
    def blocks(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(block_m, i_local, j_global)`` of the ``ΣN²`` Hessian blocks (see
        :func:`~schnetpack_hessian.layout.block_index`)."""
        return block_index(self.n_atoms, self.packing.n_blocks)

    @cached_property
    def i_global(self) -> torch.Tensor:
        """Packed index of the row atom of every Hessian block, ``(ΣN²,)``."""
        block_m, i_local, _ = self.blocks
        return self.offsets[block_m] + i_local

    @cached_property
    def slots(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(atom, real)``, each ``(B, max N)``: the packed index of atom ``a`` of
        molecule ``m`` (clamped into range for padding slots) and whether the slot
        holds an atom."""
        arange = torch.arange(self.packing.max_atoms, device=self.device)
        real = arange[None, :] < self.n_atoms[:, None]
        atom = (self.offsets[:, None] + arange[None, :]).clamp(
            max=max(self.packing.n_total - 1, 0)
        )
        return atom, real


#: PackedBatch of every registered _n_atoms tensor, forgotten with the tensor
_REGISTRY = WeakIdKeyDictionary()


def register_packing(
    n_atoms: torch.Tensor, packing: Packing, idx_m: Optional[torch.Tensor] = None
) -> PackedBatch:
    """Declare the host sizes of the batch whose ``_n_atoms`` is ``n_atoms`` (e.g.
    read from the CPU batch before its transfer to the device)."""
    if len(packing.n_atoms) != len(n_atoms):
        raise ValueError(
            f"register_packing: {len(packing.n_atoms)} molecule sizes for a batch of "
            f"{len(n_atoms)} molecules"
        )
    packed = PackedBatch(packing, n_atoms, idx_m)
    _REGISTRY[n_atoms] = packed
    return packed


def registered(n_atoms: torch.Tensor) -> Optional[PackedBatch]:
    """The :class:`PackedBatch` registered for ``n_atoms``, or None."""
    return _REGISTRY.get(n_atoms)


def packed_batch(inputs: Mapping[str, torch.Tensor]) -> PackedBatch:
    """The :class:`PackedBatch` of a batch: the registered one, or one built from the
    batch's own tensors (see the module docstring)."""
    n_atoms = inputs[spk_properties.n_atoms]
    found = _REGISTRY.get(n_atoms)
    if found is None:
        return register_packing(
            n_atoms, Packing.from_batch(inputs), inputs.get(spk_properties.idx_m)
        )
    if found.packing.periodic is None:
        # registered from the sizes alone: complete it with the batch's flags
        periodic = Packing.from_batch(inputs).periodic
        found.packing = replace(found.packing, periodic=periodic)
    return found


def packed_sizes(n_atoms: torch.Tensor) -> PackedBatch:
    """The :class:`PackedBatch` of ``n_atoms`` alone (for functions given only the
    sizes): the registered one, or one read from ``n_atoms``."""
    found = _REGISTRY.get(n_atoms)
    if found is None:
        found = register_packing(n_atoms, Packing(tuple(n_atoms.tolist())))
    return found
