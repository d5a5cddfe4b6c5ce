"""A trained model ready for evaluation: the network, its units, cutoff and elements.

``spktrain`` writes ``runs/<id>/best_model`` (the whole ``AtomisticModel``) next to
``runs/<id>/config.yaml``; the config tells the units the model was trained in (the
data module's ``property_units`` and ``distance_unit``), its cutoff and its keys.  A
bare model file without a config needs the units from the caller.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, Optional, Union

import numpy as np
import torch

import schnetpack as spk
import schnetpack.properties as spk_properties
import schnetpack.transform as trn

from schnetpack_hessian.quiet import trusted_load_warnings
from schnetpack_hessian import properties
from schnetpack_hessian.calculator import HessianCalculator, enable_full_hessian
from schnetpack_hessian.teacher import Teacher
from schnetpack_hessian.pretrained import (
    PREFIX,
    PretrainedError,
    is_exported,
    load_exported,
    resolve,
)

__all__ = [
    "EvaluationError",
    "EvaluationModel",
    "load_model",
    "load_teacher",
    "MODEL_FILE",
]

PathLike = Union[str, Path]

#: File name of the model ``spktrain`` stores in a run directory.
MODEL_FILE = "best_model"
_CONFIG_FILES = ("config.yaml", ".hydra/config.yaml")


class EvaluationError(RuntimeError):
    """A model or data set that cannot be evaluated (one line saying why)."""


@dataclass
class EvaluationModel:
    """A loaded model with what evaluation needs to know about it.

    Attributes:
        model: the ``AtomisticModel`` (float64, eval mode, full Hessian enabled).
        path: the model file.
        name: label in reports (the run directory's name).
        cutoff: neighbour-list cutoff in the model's distance unit.
        energy_unit: energy unit of the model's outputs (e.g. ``kcal/mol``).
        distance_unit: distance unit of the model's inputs (e.g. ``Ang``).
        energy_key: energy output key.
        force_key: force output key.
        hessian_key: Hessian output key.
        elements: atomic numbers the model was trained on, None if unknown.
        device: where the model runs.
    """

    model: spk.model.AtomisticModel
    path: Path
    name: str
    cutoff: float
    energy_unit: str
    distance_unit: str
    energy_key: str
    force_key: str
    hessian_key: str
    elements: Optional[FrozenSet[int]]
    device: torch.device

    @property
    def energy_to_ev(self) -> float:
        """Factor from the model's energy unit to eV."""
        return float(spk.units.convert_units(self.energy_unit, "eV"))

    @property
    def angstrom_to_model(self) -> float:
        """Factor from Å to the model's distance unit."""
        return float(spk.units.convert_units("Ang", self.distance_unit))

    def calculator(self) -> HessianCalculator:
        """A float64 :class:`~schnetpack_hessian.HessianCalculator` for this model
        (ASE units; its ``n_calls`` counts force and Hessian evaluations)."""
        with trusted_load_warnings():
            return self._calculator()

    def _calculator(self) -> HessianCalculator:
        return HessianCalculator(
            self.model,  # the loaded model, not a second load of the file
            trn.MatScipyNeighborList(cutoff=self.cutoff),
            hessian_key=self.hessian_key,
            energy_key=self.energy_key,
            force_key=self.force_key,
            energy_unit=self.energy_unit,
            position_unit=self.distance_unit,
            device=self.device,
            dtype=torch.float64,
        )


def _run_config(model_file: Path):
    from omegaconf import OmegaConf

    for name in _CONFIG_FILES:
        path = model_file.parent / name
        if path.exists():
            return OmegaConf.load(path)
    return None


def _select(config, key: str):
    from omegaconf import OmegaConf

    if config is None:
        return None
    return OmegaConf.select(config, key, throw_on_resolution_failure=False)


def _cutoff_of(model: torch.nn.Module) -> Optional[float]:
    """The representation's cutoff (PaiNN/SchNet keep it on their cutoff function)."""
    rep = getattr(model, "representation", None)
    for owner in (rep, getattr(rep, "cutoff_fn", None)):
        value = getattr(owner, "cutoff", None)
        if value is not None:
            return float(torch.as_tensor(value).item())
    return None


def _trained_elements(model: torch.nn.Module) -> Optional[FrozenSet[int]]:
    """Elements with a non-zero single-atom reference energy in ``AddOffsets``."""
    for post in getattr(model, "postprocessors", []):
        atomref = getattr(post, "atomref", None)
        if getattr(post, "add_atomrefs", False) and atomref is not None:
            z = np.flatnonzero(atomref.detach().cpu().numpy().ravel())
            if len(z):
                return frozenset(int(i) for i in z)
    return None


def _data_elements(config) -> Optional[FrozenSet[int]]:
    """Elements of the training file named in the run's config, if it is there."""
    from schnetpack_hessian.data.io import read_records

    datapath = _select(config, "data.datapath")
    if not datapath or not Path(str(datapath)).exists():
        return None
    elements = set()
    for record in read_records(str(datapath)):
        elements.update(int(z) for z in record.numbers)
    return frozenset(elements)


def _find_model_file(path: Path) -> Path:
    if path.is_dir():
        candidate = path / MODEL_FILE
        if not candidate.exists():
            raise EvaluationError(
                f"{path}: a run directory must hold {MODEL_FILE} (spktrain writes it "
                "after training)"
            )
        return candidate
    if not path.exists():
        raise EvaluationError(f"{path}: no such model file or run directory")
    return path


def _load_exported(
    path: PathLike,
    energy_unit: Optional[str],
    distance_unit: Optional[str],
    cutoff: Optional[float],
    device: torch.device,
    name: Optional[str],
) -> "EvaluationModel":
    """:func:`load_model` of an exported file or ``pretrained:NAME``."""
    try:
        exported = load_exported(path)
    except PretrainedError as err:
        raise EvaluationError(str(err)) from err
    try:
        enable_full_hessian(exported.model, exported.keys["hessian"])
    except ValueError as err:
        raise EvaluationError(f"{path}: {err}") from err
    model = exported.model.to(device=device)
    model.do_postprocessing = True
    text = str(path)
    label = text[len(PREFIX) :] if text.startswith(PREFIX) else Path(path).stem
    return EvaluationModel(
        model=model,
        path=resolve(path),
        name=name or label,
        cutoff=float(cutoff or exported.cutoff),
        energy_unit=str(energy_unit or exported.energy_unit),
        distance_unit=str(distance_unit or exported.distance_unit),
        energy_key=exported.keys["energy"],
        force_key=exported.keys["forces"],
        hessian_key=exported.keys["hessian"],
        elements=_trained_elements(model),
        device=device,
    )


def load_model(
    path: PathLike,
    energy_unit: Optional[str] = None,
    distance_unit: Optional[str] = None,
    cutoff: Optional[float] = None,
    device: Union[str, torch.device] = "cpu",
    name: Optional[str] = None,
) -> EvaluationModel:
    """Load ``spktrain``'s ``best_model`` (or a run directory holding one), an
    exported model file or a pretrained model (``pretrained:NAME``;
    :mod:`~schnetpack_hessian.pretrained`, loaded without running code).

    .. warning:: A SchNetPack model file is the whole model pickled (``torch.save``
       of the module, as ``spktrain`` writes it), so loading it runs code the file
       names. Load only model files you made or trust, as you would a Python script.

    Units, cutoff and keys come from the run's ``config.yaml`` next to the model;
    arguments given here override them.

    Args:
        path: model file or run directory.
        energy_unit: energy unit of the model's outputs (default from the config).
        distance_unit: distance unit of its inputs (default from the config, else Å).
        cutoff: neighbour-list cutoff (default from the config or the model).
        device: torch device.
        name: label in reports (default: the run directory's name).

    Raises:
        EvaluationError: no model, no energy output, no way to get forces/Hessians,
            or units that cannot be determined.
    """
    device = torch.device(device)
    if is_exported(path):
        return _load_exported(path, energy_unit, distance_unit, cutoff, device, name)
    model_file = _find_model_file(Path(path))
    config = _run_config(model_file)
    try:
        with trusted_load_warnings():  # the docstring and the CLI say it is code
            model = torch.load(model_file, map_location=device, weights_only=False)
    except Exception as err:
        raise EvaluationError(f"{model_file}: cannot load the model ({err})") from err
    if not isinstance(model, spk.model.AtomisticModel):
        raise EvaluationError(
            f"{model_file}: not a SchNetPack AtomisticModel (got "
            f"{type(model).__name__})"
        )
    energy_key = _select(config, "globals.energy_key") or spk_properties.energy
    force_key = _select(config, "globals.forces_key") or spk_properties.forces
    hessian_key = _select(config, "globals.hessian_key") or properties.hessian
    if energy_key not in getattr(model, "model_outputs", []):
        raise EvaluationError(
            f"{model_file}: the model has no energy output {energy_key!r} (outputs: "
            f"{sorted(getattr(model, 'model_outputs', []))})"
        )
    try:
        enable_full_hessian(model, hessian_key)
    except ValueError as err:
        raise EvaluationError(f"{model_file}: {err}") from err
    energy_unit = energy_unit or _select(config, "data.property_units.energy")
    if energy_unit is None:
        raise EvaluationError(
            f"{model_file}: no config.yaml beside the model tells its energy unit; "
            "pass it (--energy-unit, e.g. kcal/mol or eV)"
        )
    distance_unit = distance_unit or _select(config, "data.distance_unit") or "Ang"
    if cutoff is None:
        cutoff = _select(config, "globals.cutoff") or _cutoff_of(model)
    if cutoff is None:
        raise EvaluationError(f"{model_file}: cannot tell the cutoff; pass --cutoff")
    model = model.to(device=device, dtype=torch.float64).eval()
    model.do_postprocessing = True
    return EvaluationModel(
        model=model,
        path=model_file,
        name=name or model_file.parent.name or model_file.name,
        cutoff=float(cutoff),
        energy_unit=str(energy_unit),
        distance_unit=str(distance_unit),
        energy_key=energy_key,
        force_key=force_key,
        hessian_key=hessian_key,
        elements=_trained_elements(model) or _data_elements(config),
        device=device,
    )


def load_teacher(
    path: PathLike,
    energy_unit: str,
    device: Union[str, torch.device] = "cpu",
) -> Teacher:
    """A :class:`~schnetpack_hessian.Teacher` from a model file, a run directory or
    ``pretrained:NAME`` (as :func:`load_model`; float64), whose products come in
    ``energy_unit`` per Å².

    Raises:
        EvaluationError: the model cannot be loaded, or works in another distance
            unit than Å.
    """
    loaded = load_model(path, device=device)
    if loaded.angstrom_to_model != 1.0:
        raise EvaluationError(
            f"{loaded.path}: a teacher must work in Å (its distance unit is "
            f"{loaded.distance_unit})"
        )
    scale = float(spk.units.convert_units(loaded.energy_unit, energy_unit))
    return Teacher(loaded.model, loaded.energy_key, energy_scale=scale)
