"""Errors shared by the layers: raised by the data layer and by the training task."""

__all__ = ["HessianDataError"]


class HessianDataError(Exception):
    """A Hessian data file or structure is malformed (shape, value, unit or label)."""
