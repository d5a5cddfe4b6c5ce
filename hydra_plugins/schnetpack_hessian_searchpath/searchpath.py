"""Append ``pkg://schnetpack_hessian.configs`` to every Hydra app's search path.

Hydra imports the modules of the ``hydra_plugins`` namespace package at start-up, so a
plain ``pip install schnetpack-hessian`` makes ``spktrain experiment=hessian_demo`` work.
The ``spkhess_dataset`` resolver, registered here for the same reason, gives configs the
path of a data set shipped inside the package: ``${spkhess_dataset:reactive_chon}``
(ωB97X/6-31G(d)) or ``${spkhess_dataset:reactive_chon_xtb}`` (GFN2-xTB).
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf


def _dataset_path(name: str) -> str:
    from schnetpack_hessian.datasets import REACTIVE_SETS, reactive_set_path

    levels = {stem: level for level, stem in REACTIVE_SETS.items()}
    if name not in levels:
        raise ValueError(f"no shipped data set {name!r}; shipped: {sorted(levels)}")
    return str(reactive_set_path(levels[name]))


if not OmegaConf.has_resolver("spkhess_dataset"):
    OmegaConf.register_new_resolver("spkhess_dataset", _dataset_path)


class SchnetpackHessianSearchPathPlugin(SearchPathPlugin):
    """Adds the plugin's config groups (experiment, model, data, task, callbacks)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(
            provider="schnetpack-hessian", path="pkg://schnetpack_hessian.configs"
        )
