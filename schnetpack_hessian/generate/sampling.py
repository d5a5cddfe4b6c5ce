"""Choosing IRC points and normal-mode sampling around them.

Normal-mode sampling follows ANI-1 [#ani]_: for the ``M`` vibrational modes with unit
Cartesian directions ``q_i`` and force constants ``K_i``, draw ``c_i ≥ 0`` with
``Σ c_i ≤ 1`` (sequentially, in random mode order) and displace by

.. math:: \\Delta x = \\sum_i \\pm\\sqrt{\\frac{3 c_i N k_B T}{K_i}}\\, q_i

with random signs, so the harmonic energy added is at most ``(3/2) N k_B T``.  Away
from minima (IRC points) some ``K_i`` are small or negative; ``|K_i|`` is floored at
``k_min`` to keep displacements finite.

.. [#ani] J. S. Smith, O. Isayev, A. E. Roitberg, Chem. Sci. 8, 3192 (2017).
"""

from typing import List

import numpy as np
from ase import units

from schnetpack_hessian import vibrations
from schnetpack_hessian.generate.geometry import has_clash

__all__ = ["evenly_spaced", "normal_mode_samples"]


def evenly_spaced(n_available: int, k: int) -> List[int]:
    """``min(k, n_available)`` distinct indices evenly spread over
    ``range(n_available)``, including both ends when ``k ≥ 2``."""
    if n_available <= 0 or k <= 0:
        return []
    if k >= n_available:
        return list(range(n_available))
    if k == 1:
        return [n_available // 2]
    return sorted({int(round(v)) for v in np.linspace(0, n_available - 1, k)})


def normal_mode_samples(
    numbers: np.ndarray,
    positions: np.ndarray,
    masses: np.ndarray,
    hessian: np.ndarray,
    n_samples: int,
    temperature: float,
    rng: np.random.Generator,
    k_min: float = 1.0,
    max_tries: int = 100,
) -> np.ndarray:
    """ANI-style normal-mode-displaced geometries.

    Args:
        numbers: ``(N,)`` atomic numbers.
        positions: ``(N, 3)`` centre geometry in Å.
        masses: ``(N,)`` masses in amu.
        hessian: ``(3N, 3N)`` Hessian at the centre in eV/Å².
        n_samples: number of geometries.
        temperature: temperature in K.
        rng: random generator (seed it for reproducibility).
        k_min: floor for ``|K_i|`` in eV/Å².
        max_tries: redraws allowed per sample when atoms clash.

    Returns:
        ``(n_samples, N, 3)`` displaced positions in Å.
    """
    x0 = np.asarray(positions, dtype=np.float64)
    modes = vibrations.normal_modes(hessian, x0, masses)
    k = np.maximum(np.abs(modes.force_constants), k_min)
    n_modes, n_atoms = len(k), len(x0)
    kt = units.kB * float(temperature)
    out = []
    for _ in range(n_samples):
        for _attempt in range(max_tries):
            c = np.zeros(n_modes)
            left = 1.0
            for i in rng.permutation(n_modes):
                c[i] = rng.uniform(0.0, left)
                left -= c[i]
            signs = rng.choice([-1.0, 1.0], size=n_modes)
            amp = signs * np.sqrt(3.0 * c * n_atoms * kt / k)
            x = x0 + (amp @ modes.cartesian_modes).reshape(n_atoms, 3)
            if not has_clash(numbers, x):
                out.append(x)
                break
        else:
            raise RuntimeError(
                f"normal-mode sampling at T={temperature} K: every one of "
                f"{max_tries} draws put atoms on top of each other"
            )
    return np.array(out).reshape(n_samples, n_atoms, 3)
