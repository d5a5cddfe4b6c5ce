"""Target statistics over the structures that have the target."""

from typing import Dict, Iterable, Optional, Tuple

import torch
import schnetpack.properties as structure

__all__ = ["present_stats"]


def present_stats(
    batches: Iterable[Dict[str, torch.Tensor]],
    property: str,
    divide_by_atoms: bool,
    atomref: Optional[Dict[str, torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of a per-structure ``property`` over the structures where it is
    present (not NaN), float64 scalars, with SchNetPack's conventions
    (:func:`schnetpack.data.calculate_stats`): single-atom references subtracted
    when ``atomref`` holds the property, divided by the atom count if
    ``divide_by_atoms``, population standard deviation.  ``(NaN, NaN)`` when no
    structure has it.
    """
    values = []
    for batch in batches:
        value = batch[property].to(torch.float64).reshape(-1).clone()
        if atomref and property in atomref:
            ref = atomref[property].to(torch.float64)[batch[structure.Z]]
            per_structure = torch.zeros_like(value).index_add(
                0, batch[structure.idx_m], ref
            )
            value -= per_structure
        if divide_by_atoms:
            value /= batch[structure.n_atoms].to(torch.float64)
        values.append(value[~torch.isnan(value)])
    present = torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)
    if len(present) == 0:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return nan, nan
    return present.mean(), present.std(unbiased=False)
