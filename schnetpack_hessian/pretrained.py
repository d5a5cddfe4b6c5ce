"""Model files that load without running code, and the pretrained models shipped.

``spktrain``'s ``best_model`` is the whole model pickled: loading it runs whatever
code the file names, so it is only for files one made or trusts.  An *exported* model
(:func:`export_model`) holds plain data only: the model's Hydra configuration
(``_target_`` classes and their arguments), its ``state_dict``, units, cutoff and keys.
It loads with ``torch.load(weights_only=True)``; the model is rebuilt from classes of
SchNetPack and this package only (:func:`load_exported` refuses any other
``_target_``), so a crafted file cannot run code.

Pretrained models ship in ``schnetpack_hessian/models/`` as ``NAME.pt`` with a model
card ``NAME.md``; ``pretrained:NAME`` names one wherever a model path is accepted
(``spkhess-eval``, ``HessianCalculator``, :func:`~.evaluation.model.load_model`).
"""

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Union

import torch

from schnetpack_hessian.hessian import grouped_arguments

__all__ = [
    "PREFIX",
    "MODEL_DIR",
    "EXPORT_FORMAT",
    "ExportedModel",
    "PretrainedError",
    "available",
    "resolve",
    "is_exported",
    "export_model",
    "load_exported",
]

PREFIX = "pretrained:"
MODEL_DIR = Path(__file__).parent / "models"
#: Marker and version of an exported model file.
EXPORT_FORMAT = "schnetpack-hessian-model/1"
#: Modules whose classes an exported model may name.
_TRUSTED_MODULES = ("schnetpack.", "schnetpack_hessian.")

PathLike = Union[str, Path]


class PretrainedError(ValueError):
    """An unknown pretrained name, or an exported file that is not one."""


@dataclass(frozen=True)
class ExportedModel:
    """A model rebuilt from an exported file.

    Attributes:
        model: the SchNetPack model (float64 after :func:`load_exported`, eval mode).
        energy_unit, distance_unit: units of its outputs and inputs.
        cutoff: neighbour-list cutoff in ``distance_unit``.
        keys: ``{"energy", "forces", "hessian"}`` → model output keys.
        metadata: what the export recorded (data, recipe, command).
    """

    model: torch.nn.Module
    energy_unit: str
    distance_unit: str
    cutoff: float
    keys: Dict[str, str]
    metadata: Dict[str, Any]


def available() -> List[str]:
    """Names of the pretrained models in this installation."""
    return sorted(p.stem for p in MODEL_DIR.glob("*.pt"))


def resolve(source: PathLike) -> Path:
    """The file behind ``pretrained:NAME`` (other paths are returned as they are).

    Raises:
        PretrainedError: an unknown name (the available ones listed).
    """
    text = str(source)
    if not text.startswith(PREFIX):
        return Path(source)
    name = text[len(PREFIX) :]
    path = MODEL_DIR / f"{name}.pt"
    if not path.is_file():
        raise PretrainedError(
            f"{text}: no such pretrained model; available: {available() or 'none'}"
        )
    return path


def _read(path: Path) -> Dict[str, Any]:
    """The exported record of ``path``, loaded weights-only."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PretrainedError(
            f"{path}: not an exported model file ({type(err).__name__})"
        ) from err
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
        raise PretrainedError(
            f"{path}: not an exported model file (no {EXPORT_FORMAT!r} marker)"
        )
    return record


def is_exported(source: Any) -> bool:
    """Whether ``source`` is ``pretrained:NAME`` or a file :func:`export_model`
    wrote (read weights-only; a pickled model is not)."""
    if not isinstance(source, (str, Path)):
        return False
    if str(source).startswith(PREFIX):
        return True
    path = Path(source)
    if not path.is_file():
        return False
    try:
        _read(path)
    except PretrainedError:
        return False
    return True


def _check_targets(config: Any, where: str = "model") -> None:
    """Every ``_target_`` names a class of SchNetPack or this package that is a torch
    module or a SchNetPack transform (imported by name, nothing instantiated)."""
    if isinstance(config, dict):
        target = config.get("_target_")
        if target is not None:
            if not isinstance(target, str) or not target.startswith(_TRUSTED_MODULES):
                raise PretrainedError(
                    f"{where}: _target_ {target!r} is not a SchNetPack or "
                    "schnetpack-hessian class"
                )
            module, _, name = target.rpartition(".")
            cls = getattr(importlib.import_module(module), name, None)
            if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
                raise PretrainedError(f"{where}: _target_ {target!r} is not a module")
        for key, value in config.items():
            _check_targets(value, f"{where}.{key}")
    elif isinstance(config, list):
        for i, value in enumerate(config):
            _check_targets(value, f"{where}[{i}]")


#: ``_target_`` names of the Hessian module in exported configurations.
_HESSIAN_TARGETS = ("schnetpack_hessian.Hessian", "schnetpack_hessian.hessian.Hessian")


def _current_arguments(config: Any) -> Any:
    """``config`` with the Hessian module's arguments in today's groups: files
    exported before ``keys``/``probes`` existed load unchanged in meaning."""
    if isinstance(config, dict):
        out = {k: _current_arguments(v) for k, v in config.items()}
        if out.get("_target_") in _HESSIAN_TARGETS:
            out = grouped_arguments(out)
        return out
    if isinstance(config, list):
        return [_current_arguments(v) for v in config]
    return config


def load_exported(source: PathLike) -> ExportedModel:
    """Rebuild the model of an exported file or ``pretrained:NAME`` (float64, eval).

    Raises:
        PretrainedError: an unknown name, not an exported file, a ``_target_``
            outside SchNetPack and this package, or weights that do not fit.
    """
    import hydra

    path = resolve(source)
    record = _read(path)
    _check_targets(record["model_config"])
    # float64 first: float32 weights and float64 buffers both load exactly
    config = _current_arguments(record["model_config"])
    model = hydra.utils.instantiate(config, _convert_="all")
    model = model.to(torch.float64)
    own = model.state_dict()
    # buffers set after construction (AddOffsets' mean: () once fitted, (1,) new)
    weights = {
        k: (
            v.reshape(own[k].shape)
            if k in own and v.shape != own[k].shape and v.numel() == own[k].numel()
            else v
        )
        for k, v in record["state_dict"].items()
    }
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise PretrainedError(f"{path}: weights do not fit the model: {err}") from err
    return ExportedModel(
        model=model.eval(),
        energy_unit=record["energy_unit"],
        distance_unit=record["distance_unit"],
        cutoff=float(record["cutoff"]),
        keys=dict(record["keys"]),
        metadata=dict(record.get("metadata", {})),
    )


def export_model(
    run_dir: PathLike, out: PathLike, metadata: Dict[str, Any] = None
) -> Path:
    """Write ``spktrain`` run ``run_dir``'s ``best_model`` as an exported file.

    The run is one's own (its ``best_model`` is unpickled: a trusted file); the
    configuration comes from the run's ``config.yaml``, resolved.

    Args:
        run_dir: the spktrain run directory (``best_model`` and ``config.yaml``).
        out: the exported file to write (``.pt``).
        metadata: JSON-like facts to keep with it (data, recipe, command).

    Returns:
        ``out``.
    """
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model = torch.load(run_dir / "best_model", map_location="cpu", weights_only=False)
    record = {
        "format": EXPORT_FORMAT,
        "model_config": model_config,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "energy_unit": str(cfg.data.property_units.energy),
        "distance_unit": str(OmegaConf.select(cfg, "data.distance_unit") or "Ang"),
        "cutoff": float(cfg.globals.cutoff),
        "keys": {
            "energy": str(cfg.globals.energy_key),
            "forces": str(cfg.globals.forces_key),
            "hessian": str(cfg.globals.hessian_key),
        },
        "metadata": dict(metadata or {}),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(record, tmp)
    tmp.replace(out)
    load_exported(out)  # what was written loads, weights-only
    return out
