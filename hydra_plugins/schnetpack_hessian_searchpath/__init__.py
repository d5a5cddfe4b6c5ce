"""Hydra plugin: adds schnetpack-hessian's configs to ``spktrain``'s search path."""

from hydra_plugins.schnetpack_hessian_searchpath.searchpath import (
    SchnetpackHessianSearchPathPlugin,
)

__all__ = ["SchnetpackHessianSearchPathPlugin"]
