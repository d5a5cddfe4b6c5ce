"""The warnings the package silences on purpose, each policy in one place.

- :func:`optimiser_warnings`: ASE's and Sella's optimisers, NEB interpolation and IRC
  warn about numerical steps (ill-conditioned internal coordinates, deprecated
  keywords) on almost every search; a search reports its outcome (converged, steps,
  imaginary modes) instead.
- :func:`trusted_load_warnings`: torch < 2.6 warns on every ``weights_only=False``
  load; the package unpickles only model files it documents as code (a trained run).
"""

import contextlib
import warnings
from typing import Iterator

__all__ = ["optimiser_warnings", "trusted_load_warnings"]


@contextlib.contextmanager
def optimiser_warnings() -> Iterator[None]:
    """Silence every warning of an ASE/Sella search run inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def trusted_load_warnings() -> Iterator[None]:
    """Silence torch's ``FutureWarning`` about ``weights_only=False`` inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield
