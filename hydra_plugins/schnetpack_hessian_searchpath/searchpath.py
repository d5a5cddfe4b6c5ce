"""Append ``pkg://schnetpack_hessian.configs`` to every Hydra app's search path.

Hydra imports the modules of the ``hydra_plugins`` namespace package at start-up, so a
plain ``pip install schnetpack-hessian`` makes ``spktrain experiment=hessian_demo`` work.
The ``spkhess_dataset`` resolver, registered here for the same reason, gives configs the
path of a data set shipped inside the package: ``${spkhess_dataset:reactive_chon}``.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf


def _dataset_path(name: str) -> str:
    from schnetpack_hessian.datasets import reactive_set_path

    shipped = {"reactive_chon": reactive_set_path}
    if name not in shipped:
        raise ValueError(f"no shipped data set {name!r}; shipped: {sorted(shipped)}")
    return str(shipped[name]())


if not OmegaConf.has_resolver("spkhess_dataset"):
    OmegaConf.register_new_resolver("spkhess_dataset", _dataset_path)


class SchnetpackHessianSearchPathPlugin(SearchPathPlugin):
    """Adds the plugin's config groups (experiment, model, data, task, callbacks)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(
            provider="schnetpack-hessian", path="pkg://schnetpack_hessian.configs"
        )
