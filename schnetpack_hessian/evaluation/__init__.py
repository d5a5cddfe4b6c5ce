"""Evaluation of trained models: errors and what a Hessian-trained model buys downstream."""

from schnetpack_hessian.evaluation.errors import evaluate

__all__ = ["evaluate"]
