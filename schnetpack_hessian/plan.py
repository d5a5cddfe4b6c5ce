"""What the Hessian module computes, and how its seeded backward passes run.

Policy, kept apart from the autograd machinery of :mod:`schnetpack_hessian.hessian`:

- :class:`HessianSchedule`: what is computed in training and in evaluation
  (``"none"``, ``"hvp"`` or ``"full"``); the module's ``model_outputs`` follow from it.
- :class:`PassSettings`: the user's settings of the passes (chunking, vectorisation,
  memory bound), one nested block in Hydra configs (``passes:``).
- :class:`PassPlan`: those settings resolved for one batch (``"auto"`` decided, the
  memory bound in bytes, whether to build a graph), handed to the engine functions.
- :class:`ProbeSettings`: how many probes per molecule, their distribution and seed
  (``probes:`` in Hydra); :class:`HessianKeys`: where the module writes its results
  (``keys:``).
"""

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Union

import torch

import schnetpack.properties as spk_properties

from schnetpack_hessian import properties

__all__ = [
    "COMPUTE",
    "HessianSchedule",
    "PassSettings",
    "PassPlan",
    "ProbeSettings",
    "HessianKeys",
    "PROBES",
    "CPU_VECTORIZE_MAX_PAIRS",
    "AUTO_CHUNK",
    "CPU_RETAIN_MB",
    "CUDA_RETAIN_FRACTION",
    "auto_retain_bytes",
]

#: What a phase can compute: nothing, Hessian-vector products, the full Hessian.
COMPUTE = ("none", "hvp", "full")
#: Probe distributions: Gaussian and Rademacher vectors (unbiased ``E[v vᵀ] = I``),
#: or ``rows`` (unit vectors along Cartesian rows, exact Hessian rows).
PROBES = ("gaussian", "rademacher", "rows")
#: On CPUs, vectorising the seeds pays off only for batches with few atom pairs, where
#: per-operation overhead dominates (e.g. 4 small molecules, 122 pairs: 2× faster);
#: above this, vmap's larger intermediates make it slower (16 molecules, 860 pairs).
CPU_VECTORIZE_MAX_PAIRS = 512
#: Seeds per vectorised pass and per step of the memory-bounded backward for
#: ``chunk_size="auto"``: (vectorised, looped).
AUTO_CHUNK = (16, 4)
#: ``retain_mb="auto"`` on a CPU (and on any device other than CUDA), MiB of saved
#: tensors: the process grows by about 2.4× this, about 600 MiB.
CPU_RETAIN_MB = 256.0
#: ``retain_mb="auto"`` on a CUDA device: this fraction of the device's free memory
#: when a module first trains on it in this process; the kept graphs then take about
#: a quarter of what was free (2.4× the budget).  E.g. 7.4 GiB on an 80 GB card with
#: 79 GB free, 1.3 GiB on a 16 GB card with 14 GB free.
CUDA_RETAIN_FRACTION = 0.1

#: the bytes of ``retain_mb="auto"`` per CUDA device (type, index), read once per
#: process: ``torch.cuda.mem_get_info`` waits for the device
_AUTO_RETAIN_BYTES: Dict[Tuple[str, int], int] = {}


def auto_retain_bytes(device: Union[str, torch.device]) -> int:
    """The memory bound of ``retain_mb="auto"`` on ``device``, bytes.

    On a CUDA device :data:`CUDA_RETAIN_FRACTION` of the free memory that
    ``torch.cuda.mem_get_info`` reports the first time the device is asked for in
    this process, cached for the process (the call synchronises, so it is not made
    per step); on a CPU and any other device (``meta``, ...) :data:`CPU_RETAIN_MB`.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return int(CPU_RETAIN_MB * 2**20)
    index = torch.cuda.current_device() if device.index is None else device.index
    key = (device.type, index)
    if key not in _AUTO_RETAIN_BYTES:
        free, _ = torch.cuda.mem_get_info(index)
        _AUTO_RETAIN_BYTES[key] = int(CUDA_RETAIN_FRACTION * free)
    return _AUTO_RETAIN_BYTES[key]


@dataclass(frozen=True)
class HessianSchedule:
    """What the :class:`~schnetpack_hessian.Hessian` module computes in each phase.

    Attributes:
        training: ``"none"`` (forces only: E and E+F baselines), or the module's mode
            (``"full"``: the exact Hessian; ``"hvp"``: probe products).
        evaluation: ``"none"``, the mode's product, or ``"full"`` also in HVP mode
            (exact Hessian metrics in validation; the probes are drawn as well).
    """

    training: str
    evaluation: str

    @classmethod
    def resolve(
        cls, mode: str, schedule: Union["HessianSchedule", Mapping[str, Any], None]
    ) -> "HessianSchedule":
        """The schedule for ``mode`` from a schedule, a mapping (Hydra) or None.

        In a mapping, ``True`` stands for the mode's product and ``False`` for
        ``"none"`` (so ``training: ${globals.hessian_in_training}`` works); missing
        entries default to the mode's product.

        Raises:
            ValueError: unknown phase or value, or a product the mode cannot make.
        """
        if isinstance(schedule, HessianSchedule):
            values: Dict[str, Any] = {
                "training": schedule.training,
                "evaluation": schedule.evaluation,
            }
        else:
            values = dict(schedule or {})
        unknown = set(values) - {"training", "evaluation"}
        if unknown:
            raise ValueError(
                f"Hessian: schedule has unknown phases {sorted(unknown)}; "
                "expected 'training' and 'evaluation'"
            )
        resolved = {}
        for phase in ("training", "evaluation"):
            value = values.get(phase, True)
            if isinstance(value, bool):
                value = mode if value else "none"
            if value not in COMPUTE:
                raise ValueError(
                    f"Hessian: schedule {phase}={value!r}, expected one of {COMPUTE} "
                    "or a bool"
                )
            if mode == "full" and value == "hvp":
                raise ValueError(
                    f"Hessian: schedule {phase}='hvp' needs mode='hvp' (mode='full' "
                    "writes no probe products)"
                )
            if mode == "hvp" and phase == "training" and value == "full":
                raise ValueError(
                    "Hessian: schedule training='full' needs mode='full' (in HVP mode "
                    "the loss is trained on probe products)"
                )
            resolved[phase] = value
        return cls(**resolved)

    def computes(self, training: bool) -> str:
        """What the phase (training or evaluation) computes."""
        return self.training if training else self.evaluation

    @property
    def writes_full(self) -> bool:
        """Whether any phase writes the full Hessian (its key is a model output)."""
        return "full" in (self.training, self.evaluation)


@dataclass(frozen=True)
class PassPlan:
    """How the seeded backward passes of one batch run.

    Attributes:
        create_graph: build the graph of the results (training on them).
        chunk_size: seeds per vectorised pass and per step of the memory-bounded
            backward (None: all at once).
        vectorize: vectorise the seeds with ``is_grads_batched``.
        retain_bytes: saved-tensor bytes the kept second-order graphs may hold in
            training; the rest is recomputed in the backward (None: keep all).
    """

    create_graph: bool
    chunk_size: Optional[int] = None
    vectorize: bool = True
    retain_bytes: Optional[int] = None


class _Settings:
    """A settings dataclass the :class:`~schnetpack_hessian.Hessian` constructor takes
    as an instance, a mapping of its fields (one Hydra block) or None (defaults)."""

    #: the constructor argument it is given as (for messages)
    _ARGUMENT: ClassVar[str] = ""

    @classmethod
    def resolve(cls, value: Union["_Settings", Mapping[str, Any], None]) -> Any:
        """An instance from an instance, a mapping of its fields or None.

        Raises:
            ValueError: unknown fields, or invalid values.
        """
        if isinstance(value, cls):
            return value
        values = dict(value or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"Hessian: {cls._ARGUMENT} has unknown settings {sorted(unknown)}; "
                f"expected {sorted(known)}"
            )
        return cls(**values)


@dataclass(frozen=True)
class ProbeSettings(_Settings):
    """The probes of ``mode="hvp"``: ``n`` vectors per molecule, redrawn at every
    training call.

    Attributes:
        n: probes per molecule (>= 1).
        kind: their distribution, one of :data:`PROBES`.
        seed: seed of the module's probe stream (None: torch's global generator).
    """

    _ARGUMENT: ClassVar[str] = "probes"

    n: int = 1
    kind: str = "gaussian"
    seed: Optional[int] = None

    def __post_init__(self):
        if self.kind not in PROBES:
            raise ValueError(
                f"Hessian: probe must be one of {PROBES}, got {self.kind!r}"
            )
        n = self.n
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(
                "Hessian: n_probes must be an integer >= 1 (probes per molecule), "
                f"got {n!r}"
            )


@dataclass(frozen=True)
class HessianKeys(_Settings):
    """Where the :class:`~schnetpack_hessian.Hessian` module writes its results.

    Attributes:
        hessian: the full Hessian ``(ΣN², 3, 3)``.
        hvp: the Hessian-vector products ``(k, ΣN, 3)``.
        probes: their probe vectors ``(k, ΣN, 3)``.
    """

    _ARGUMENT: ClassVar[str] = "keys"

    hessian: str = properties.hessian
    hvp: str = properties.hessian_hvp
    probes: str = properties.hessian_probes


@dataclass(frozen=True)
class PassSettings(_Settings):
    """The user's settings of the seeded passes (see :class:`PassPlan`).

    Attributes:
        chunk_size: seeds per pass chunk; ``"auto"``: 16 when vectorising, else 4;
            None: all at once.
        vectorize: vectorise with ``is_grads_batched``; None: on GPUs, and on CPUs for
            batches with at most :data:`CPU_VECTORIZE_MAX_PAIRS` atom pairs.
        memory_efficient: in training with full Hessians, bound the memory of the
            second-order graphs by ``retain_mb`` (False keeps every graph).
        retain_mb: MiB of saved tensors the kept graphs may hold (None: all; 0:
            recompute all); the process grows by about 2.4× this.  ``"auto"`` (the
            default) decides per device when the module first trains on it
            (:func:`auto_retain_bytes`): 256 MiB on a CPU, a tenth of a CUDA
            device's free memory at that moment, read once per device and process.
            Settings saved with a number (earlier releases' 256.0) keep it.
    """

    _ARGUMENT: ClassVar[str] = "passes"

    chunk_size: Union[int, str, None] = "auto"
    vectorize: Optional[bool] = None
    memory_efficient: bool = True
    retain_mb: Union[float, str, None] = "auto"

    def __post_init__(self):
        chunk = self.chunk_size
        if (
            chunk is not None
            and chunk != "auto"
            and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1)
        ):
            raise ValueError(
                f"Hessian: chunk_size must be 'auto', None or >= 1, got {chunk!r}"
            )
        retain = self.retain_mb
        if (
            retain is not None
            and retain != "auto"
            and (
                isinstance(retain, bool)
                or not isinstance(retain, numbers.Real)
                or not math.isfinite(retain)
                or retain < 0
            )
        ):
            raise ValueError(
                "Hessian: retain_mb must be 'auto', None (keep every graph) or a "
                f"finite number >= 0 (MiB), got {retain!r}"
            )

    def retain_bytes_on(self, device: Union[str, torch.device]) -> Optional[int]:
        """The memory bound on ``device`` in bytes (None: unbounded); ``"auto"``
        resolved by :func:`auto_retain_bytes`."""
        if not self.memory_efficient or self.retain_mb is None:
            return None
        if self.retain_mb == "auto":
            return auto_retain_bytes(device)
        return int(self.retain_mb * 2**20)

    @property
    def retain_bytes(self) -> Optional[int]:
        """The memory bound on a CPU in bytes (None: unbounded); see
        :meth:`retain_bytes_on` for other devices."""
        return self.retain_bytes_on("cpu")

    def plan(self, inputs: Dict[str, torch.Tensor], create_graph: bool) -> PassPlan:
        """The plan for one batch: ``"auto"`` and ``None`` decided from its device
        and number of atom pairs; the memory bound only when a graph is built
        (evaluation never reads the device's memory)."""
        device = inputs[spk_properties.R].device
        vectorize = self.vectorize
        if vectorize is None:
            if device.type != "cpu":
                vectorize = True
            else:
                idx_i = inputs.get(spk_properties.idx_i)
                n_atoms = inputs[spk_properties.n_atoms]
                n_pairs = (
                    int(idx_i.shape[0])
                    if idx_i is not None
                    else int((n_atoms**2).sum())
                )
                vectorize = n_pairs <= CPU_VECTORIZE_MAX_PAIRS
        chunk_size = self.chunk_size
        if chunk_size == "auto":
            chunk_size = AUTO_CHUNK[0] if vectorize else AUTO_CHUNK[1]
        return PassPlan(
            create_graph=create_graph,
            chunk_size=chunk_size,
            vectorize=bool(vectorize),
            retain_bytes=self.retain_bytes_on(device) if create_graph else None,
        )
