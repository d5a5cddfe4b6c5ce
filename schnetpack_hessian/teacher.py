"""Teacher models: curvature labels from a frozen model instead of reference Hessians.

Hessian distillation trains a student on the Hessian of a teacher rather than on
quantum-chemical Hessians, which are scarce: the teacher's exact Hessian-vector
product along the student's probe is the target (no stored Hessians at all), or the
teacher's Hessians are stored once as labels (``spkhess-generate label --teacher``).

A :class:`Teacher` wraps any SchNetPack model (its energy output modules are run; the
modules that differentiate it, such as ``Forces`` or
:class:`~schnetpack_hessian.Hessian`, are skipped) or any torch module mapping a
SchNetPack batch to molecular energies ``(B,)`` (or to a dict holding them).  It is
frozen and computes in its own dtype; products and Hessians come back in the
batch's dtype, in the target's energy unit (``energy_scale`` converts) per Å².
"""

from typing import Dict, Optional

import torch
import torch.nn as nn

import schnetpack.properties as spk_properties

from schnetpack_hessian.hessian import energy_gradient, full_hessian, hessian_rows
from schnetpack_hessian.packing import packed_batch
from schnetpack_hessian.plan import PassSettings

__all__ = ["Teacher", "TeacherError"]


class TeacherError(RuntimeError):
    """A teacher that gives no energy for a batch (one line saying why)."""


class Teacher(nn.Module):
    """A frozen model whose exact second derivatives are a student's labels.

    Args:
        model: a SchNetPack ``AtomisticModel``, or a module mapping a batch to
            energies ``(B,)`` or to a dict with ``energy_key``.
        energy_key: key of the molecular energy in the model's outputs.
        energy_scale: factor from the teacher's energy unit to the student's (for
            example ``convert_units("eV", "kcal/mol")``); positions are in Å for both.
        passes: seeded-pass settings of the full Hessian
            (:class:`~schnetpack_hessian.plan.PassSettings`).
    """

    def __init__(
        self,
        model: nn.Module,
        energy_key: str = spk_properties.energy,
        energy_scale: float = 1.0,
        passes: Optional[PassSettings] = None,
    ):
        super().__init__()
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.energy_key = energy_key
        self.energy_scale = float(energy_scale)
        self.passes = PassSettings.resolve(passes)

    def train(self, mode: bool = True) -> "Teacher":
        """A teacher stays in evaluation mode (a task's ``train()`` leaves it)."""
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the teacher computes in (its parameters')."""
        return next(self.model.parameters()).dtype

    def inputs(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """A fresh input dict for the teacher: the batch's SchNetPack inputs (keys
        starting with ``_``), floats in the teacher's dtype, positions detached and
        requiring grad (the student's graph is not touched)."""
        dtype = self.dtype
        inputs = {}
        for key, value in batch.items():
            if not key.startswith("_") or not isinstance(value, torch.Tensor):
                continue
            inputs[key] = (
                value.detach().to(dtype) if value.is_floating_point() else value
            )
        inputs[spk_properties.R] = inputs[spk_properties.R].requires_grad_(True)
        return inputs

    def energy(self, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Molecular energies ``(B,)`` in the student's energy unit.

        Raises:
            TeacherError: the model gives no energy under ``energy_key``.
        """
        model = self.model
        if hasattr(model, "representation") and hasattr(model, "output_modules"):
            for module in getattr(model, "input_modules", []):
                inputs = module(inputs)
            inputs = model.representation(inputs)
            for module in model.output_modules:
                if getattr(module, "required_derivatives", None):
                    continue  # Forces, Response, Hessian: derivatives are ours to take
                inputs = module(inputs)
            if getattr(model, "do_postprocessing", False):
                inputs = model.postprocess(inputs)
            out = inputs
        else:
            out = model(inputs)
        energy = out.get(self.energy_key) if isinstance(out, dict) else out
        if not isinstance(energy, torch.Tensor):
            raise TeacherError(
                f"Teacher: the model gives no energy under {self.energy_key!r} "
                f"(outputs: {sorted(out) if isinstance(out, dict) else type(out)})"
            )
        return energy.reshape(-1) * self.energy_scale

    def _gradient(self, batch: Dict[str, torch.Tensor]):
        inputs = self.inputs(batch)
        with torch.enable_grad():
            energy = self.energy(dict(inputs))
            positions = inputs[spk_properties.R]
            gradient = energy_gradient(energy, positions, create_graph=True)
        return inputs, positions, gradient

    def hvp(self, batch: Dict[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
        """The teacher's exact products ``H v`` ``(k, ΣN, 3)`` along ``probes``
        ``(k, ΣN, 3)``, detached, in the probes' dtype."""
        inputs, positions, gradient = self._gradient(batch)
        plan = self.passes.plan(inputs, create_graph=False)
        with torch.enable_grad():
            rows = hessian_rows(
                gradient, positions, probes.detach().to(self.dtype), plan
            )
        return rows.detach().to(probes.dtype)

    def hessian(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's exact Hessians in block layout ``(ΣN², 3, 3)``, detached,
        in the batch's position dtype (all 3N rows: no symmetry assumed of a
        teacher)."""
        dtype = batch[spk_properties.R].dtype
        inputs, positions, gradient = self._gradient(batch)
        plan = self.passes.plan(inputs, create_graph=False)
        with torch.enable_grad():
            hessian = full_hessian(
                gradient,
                positions,
                inputs[spk_properties.n_atoms],
                plan,
                None,
                packed_batch(inputs),
            )
        return hessian.detach().to(dtype)
