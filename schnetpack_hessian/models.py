"""One factory for SchNet/PaiNN energy models, built from the shipped Hydra configs.

``spktrain`` builds the representation from ``configs/model/representation/
{painn,schnet}_smooth.yaml``; :func:`build_potential` instantiates the same files, so
the tests, the benchmark and the docs use the model that training uses (C² cutoff,
PaiNN's larger norm epsilon) and cannot drift from it.
"""

from pathlib import Path
from typing import List, Optional, Union

import torch

import schnetpack as spk

__all__ = ["REPRESENTATIONS", "representation_config", "build_potential"]

#: Representations with a shipped config.
REPRESENTATIONS = ("painn", "schnet")
_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "model" / "representation"


def representation_config(name: str):
    """The shipped representation config (an OmegaConf ``DictConfig``) without its
    Hydra ``defaults`` (the radial basis is given separately).

    Raises:
        ValueError: unknown representation.
    """
    from omegaconf import OmegaConf

    if name not in REPRESENTATIONS:
        raise ValueError(
            f"unknown representation {name!r}; choose from {REPRESENTATIONS}"
        )
    config = OmegaConf.load(_CONFIG_DIR / f"{name}_smooth.yaml")
    config.pop("defaults", None)
    return config


def build_potential(
    representation: str = "painn",
    output_modules: Optional[List[torch.nn.Module]] = None,
    cutoff: float = 5.0,
    n_atom_basis: int = 16,
    n_interactions: int = 2,
    n_rbf: int = 12,
    smooth: bool = True,
    epsilon: Optional[float] = None,
    dtype: torch.dtype = torch.float64,
    device: Union[str, torch.device] = "cpu",
    seed: Optional[int] = 0,
) -> spk.model.NeuralNetworkPotential:
    """An energy model (``Atomwise`` → ``energy``) followed by ``output_modules``.

    Args:
        representation: ``"painn"`` or ``"schnet"``.
        output_modules: modules after the energy (e.g. a ``Hessian``).
        cutoff: cutoff radius (length unit).
        n_atom_basis: features per atom.
        n_interactions: interaction blocks.
        n_rbf: Gaussian radial basis functions.
        smooth: the shipped curvature-ready settings (C² ``SmoothstepCutoff``, PaiNN
            epsilon 1e-4); False gives SchNetPack's own defaults (``CosineCutoff``,
            epsilon 1e-8), whose curvature artefacts the smoothness tests show.
        epsilon: PaiNN's norm epsilon, overriding the above.
        dtype: parameter dtype.
        device: parameter device.
        seed: torch seed for the initial weights (None: leave the global RNG alone).
    """
    from hydra.utils import instantiate

    if seed is not None:
        torch.manual_seed(seed)
    config = representation_config(representation)
    config.n_atom_basis = n_atom_basis
    config.n_interactions = n_interactions
    config.cutoff_fn.cutoff = cutoff
    if not smooth:
        config.cutoff_fn = {"_target_": "schnetpack.nn.CosineCutoff", "cutoff": cutoff}
        config.pop("epsilon", None)
    if epsilon is not None:
        if representation != "painn":
            raise ValueError("build_potential: epsilon is a PaiNN setting")
        config.epsilon = epsilon
    rep = instantiate(
        config, radial_basis=spk.nn.GaussianRBF(n_rbf=n_rbf, cutoff=cutoff)
    )
    model = spk.model.NeuralNetworkPotential(
        representation=rep,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=n_atom_basis, output_key="energy")]
        + list(output_modules or []),
    )
    return model.to(device=device, dtype=dtype)
