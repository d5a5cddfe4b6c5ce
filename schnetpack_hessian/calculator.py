"""ASE calculator with Hessians, for vibrational analysis, Sella TS searches, NEB and MD.

``HessianCalculator`` is SchNetPack's ``SpkCalculator`` plus ``get_hessian(atoms)``, a
``(3N, 3N)`` matrix in eV/Å² that plugs into ``ase.vibrations.VibrationsData.from_2d`` and
Sella's ``hessian_function``.  Any SchNetPack energy model works: a model trained with
``spk.atomistic.Forces`` gets a :class:`~schnetpack_hessian.Hessian` module in its place,
a model with an HVP-mode ``Hessian`` computes full Hessians in evaluation.
"""

import os
from dataclasses import replace
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import ase
import numpy as np
import torch
from ase.calculators.calculator import Calculator, CalculatorError, all_changes

import schnetpack as spk
import schnetpack.properties as spk_properties
from schnetpack.interfaces import SpkCalculator

from schnetpack_hessian import properties
from schnetpack_hessian.hessian import Hessian
from schnetpack_hessian.layout import blocks_to_square
from schnetpack_hessian.precision import guard_precision
from schnetpack_hessian.pretrained import is_exported, load_exported

__all__ = ["HessianCalculator", "enable_full_hessian", "hessians_computed"]


@contextmanager
def hessians_computed(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Within the block, the model's ``Hessian`` modules compute second derivatives
    only if ``enabled`` (forces are written either way)."""
    modules = [m for m in model.modules() if isinstance(m, Hessian)]
    before = [module.active for module in modules]
    for module in modules:
        module.active = enabled
    try:
        yield
    finally:  # the switches as they were, not simply on
        for module, active in zip(modules, before):
            module.active = active


def enable_full_hessian(
    model: spk.model.AtomisticModel, hessian_key: str = properties.hessian
) -> spk.model.AtomisticModel:
    """Make an energy model output its full Hessian in eval mode (in place).

    A :class:`~schnetpack_hessian.Hessian` gets ``evaluation="full"`` in its schedule
    (:meth:`~schnetpack_hessian.Hessian.set_schedule`, writing ``hessian_key``); a ``spk.atomistic.Forces`` module
    is replaced by a full-mode ``Hessian`` with the same keys (which also writes the
    forces).

    Raises:
        ValueError: the model has neither module.
    """
    outputs = model.output_modules
    for i, module in enumerate(outputs):
        if isinstance(module, Hessian):
            module.keys = replace(module.keys, hessian=hessian_key)
            module.set_schedule(evaluation="full")
            break
        if isinstance(module, spk.atomistic.Forces):
            if module.calc_stress:
                raise ValueError(
                    "enable_full_hessian: the model's Forces module computes stress, "
                    "which Hessian does not; use a molecular model"
                )
            outputs[i] = Hessian(
                mode="full",
                energy_key=module.energy_key,
                force_key=module.force_key,
                keys={"hessian": hessian_key},
            )
            break
    else:
        raise ValueError(
            "enable_full_hessian: the model has neither a schnetpack_hessian.Hessian nor "
            "a schnetpack.atomistic.Forces output module to take the Hessian from"
        )
    model.collect_derivatives()
    model.collect_outputs()
    return model


_EXPECTED = (
    "HessianCalculator needs a saved SchNetPack model (spktrain's best_model, or "
    "torch.save(model, path) of an AtomisticModel)"
)


def _not_a_model(path: Path) -> Optional[str]:
    """Why ``path`` cannot be a model file (missing, a data file or folder), or None."""
    from schnetpack_hessian.convert import ConversionError, guess_format

    if not path.exists():
        return f"{path}: no such model file; {_EXPECTED}"
    try:
        data_format = guess_format([path])
    except ConversionError:
        data_format = None
    if data_format is not None:
        what = "folder" if path.is_dir() else "file"
        return (
            f"{path}: is a data {what} (format {data_format}), not a model; "
            + _EXPECTED
        )
    if path.is_dir():
        return f"{path}: is a directory, not a model file; {_EXPECTED}"
    return None


def _load_problem(path: Path, err: Exception) -> str:
    """What ``path`` holds when SchNetPack could not load a model from it."""
    try:  # weights-only: nothing in the file runs
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        content = None
    if isinstance(content, dict) and all(
        isinstance(v, torch.Tensor) for v in content.values()
    ):
        return (
            f"{path}: holds a state_dict (parameters only), not a model; build the "
            "model, load_state_dict() it and torch.save() the whole model, or pass "
            f"spktrain's best_model ({_EXPECTED})"
        )
    return f"{path}: cannot load a model from it ({type(err).__name__}: {err}); " + (
        _EXPECTED
    )


class HessianCalculator(SpkCalculator):
    """``SpkCalculator`` that also computes Hessians (ASE property ``"hessian"``).

    .. warning:: ``model_file`` as ``spktrain`` writes it is a pickled model:
       loading it runs code the file names. Use only model files you made or trust.
       Pretrained models (``"pretrained:NAME"``) and exported files
       (:func:`~schnetpack_hessian.pretrained.export_model`) load without pickle.

    Args:
        model_file: path of a saved SchNetPack model (e.g. ``spktrain``'s best_model),
            ``"pretrained:NAME"``, or a loaded ``AtomisticModel`` (used as it is,
            not copied: the calculator shares it).  A data file, a folder or a
            ``state_dict`` is refused with a ``CalculatorError`` saying what it is.
        neighbor_list: SchNetPack neighbour list transform (e.g.
            ``schnetpack.transform.MatScipyNeighborList(cutoff=5.0)``).
        hessian_key: model output holding the Hessian.
        **kwargs: as :class:`schnetpack.interfaces.SpkCalculator` (``energy_unit``,
            ``position_unit``, ``device``, ``dtype``, ...).
    """

    hessian = "hessian"
    implemented_properties = SpkCalculator.implemented_properties + [hessian]

    def __init__(
        self,
        model_file: str,
        neighbor_list: spk.transform.Transform,
        hessian_key: str = properties.hessian,
        **kwargs,
    ):
        self.hessian_key = hessian_key
        #: model evaluations so far: ``{"forces": all calls, "hessian": those with
        #: a Hessian}`` (an optimiser's cost in force and Hessian calls)
        self.n_calls: Dict[str, int] = {"forces": 0, "hessian": 0}
        self._precision_checked = False  # warned once about TF32/autocast
        super().__init__(model_file, neighbor_list, **kwargs)
        self.property_map[self.hessian] = hessian_key
        self.property_units[self.hessian] = (
            self.energy_conversion / self.position_conversion**2
        )

    def _load_model(self, *args, **kwargs) -> spk.model.AtomisticModel:
        # schnetpack 2.1 passes (model_file), 2.2 (model, device, dtype)
        source = args[0] if args else kwargs.get("model_file", kwargs.get("model"))
        if is_exported(source):  # pretrained:NAME or an exported file: no pickle
            model = load_exported(source).model
            if len(args) >= 3:
                model = model.to(device=args[1], dtype=args[2])
            return enable_full_hessian(model, self.hessian_key)
        if isinstance(source, torch.nn.Module):  # loaded already: shared, not copied
            model = source.eval()
            if len(args) >= 3:
                model = model.to(device=args[1], dtype=args[2])
            return enable_full_hessian(model, self.hessian_key)
        if not isinstance(source, (str, os.PathLike)):
            return enable_full_hessian(
                super()._load_model(*args, **kwargs), self.hessian_key
            )
        problem = _not_a_model(Path(source))
        if problem is not None:
            raise CalculatorError(problem)
        try:
            model = super()._load_model(*args, **kwargs)
        except Exception as err:
            raise CalculatorError(_load_problem(Path(source), err)) from err
        return enable_full_hessian(model, self.hessian_key)

    def calculate(
        self,
        atoms: Optional[ase.Atoms] = None,
        properties: List[str] = ["energy"],
        system_changes: List[str] = all_changes,
    ):
        """Evaluate the model; the Hessian only when ``properties`` asks for it."""
        wanted = [self.energy, self.forces] + [
            p for p in properties if p not in (self.energy, self.forces)
        ]
        if not self.calculation_required(atoms, wanted):
            return
        Calculator.calculate(self, atoms)
        with_hessian = self.hessian in wanted
        if with_hessian and not self._precision_checked:
            self._precision_checked = True
            parameter = next(self.model.parameters(), None)
            if parameter is not None:
                guard_precision(
                    "HessianCalculator",
                    parameter.device,
                    parameter.dtype,
                    allow=False,
                    opt_in="a float64 calculator (dtype=torch.float64)",
                    refuse=False,
                )
        with hessians_computed(self.model, with_hessian):
            model_results = self.model(self.converter(atoms))
        self.n_calls["forces"] += 1
        self.n_calls["hessian"] += int(with_hessian)
        results = {}
        for prop in wanted:
            key = self.property_map.get(prop)
            if key is None or key not in model_results:
                raise CalculatorError(
                    f"HessianCalculator: the model has no output for {prop!r} "
                    f"(model outputs: {sorted(model_results)})"
                )
            value = model_results[key].detach().cpu().numpy().astype(np.float64)
            if prop == self.energy:
                value = value.item()
            elif prop == self.stress:
                value = value.squeeze()
            elif prop == self.hessian:
                value = blocks_to_square(value)
            results[prop] = value * self.property_units[prop]
        self.results = results
        self.model_results = model_results

    def get_hessian(self, atoms: Optional[ase.Atoms] = None) -> np.ndarray:
        """Hessian d²E/dR² of ``atoms``, ``(3N, 3N)`` in eV/Å²."""
        return self.get_property(self.hessian, atoms)
