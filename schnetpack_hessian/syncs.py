"""Count the calls that make the host wait for an accelerator (host synchronisations).

On a GPU the host queues kernels and runs ahead of the device; a call that needs a
device value on the host (``.item()``, ``bool(t)``, an output shape that depends on
the data, a blocking copy) drains the queue and the device idles until the host has
queued the next kernels.  :class:`SyncCounter` records such calls while it is active
(a :class:`torch.overrides.TorchFunctionMode`), with where they come from, so that a
test can demand that a training step has none.

What is counted, for a call that involves a *device* tensor (see below):

* reading values on the host: ``.item()``, ``.tolist()``, ``.numpy()``,
  ``bool()``/``int()``/``float()``/``complex()`` of a tensor, using a tensor as an
  index (``__index__``), ``repr``/``str``/``format``;
* copies to the host: ``.cpu()``, ``.to("cpu")``, ``copy_`` into a host tensor;
* blocking copies to the device (``cudaMemcpy`` + stream synchronisation): ``.to(dev)``
  or ``.cuda()`` of a host tensor without ``non_blocking=True``, ``copy_`` from a host
  tensor without it, ``torch.tensor``/``as_tensor``/``asarray``/``new_tensor`` of host
  data with a device;
* outputs whose size depends on the data: ``nonzero``, ``argwhere``, one-argument
  ``where``, ``masked_select``, ``unique``, ``unique_consecutive``, ``bincount``,
  ``histc``, ``one_hot`` without ``num_classes``, ``repeat_interleave`` with tensor
  repeats and no ``output_size``, indexing (read or write) with a boolean mask;
* results returned as Python values: ``equal``, ``allclose``;
* linear algebra that checks its error codes on the host (the ``torch.linalg``
  documentation says so for these): ``svd``, ``svdvals``, ``eig``, ``eigh``,
  ``eigvals``, ``eigvalsh``, ``inv``, ``solve``, ``cholesky``, ``lstsq``, ``pinv``,
  ``matrix_rank``, ``lu_factor`` and their ``torch.*`` aliases;
* ``mixed``: an operation on device tensors with a host tensor of one or more
  dimensions (an error on a GPU, or an implicit blocking copy for host indices).

Host or device?  With ``simulate=False`` (a real accelerator) a tensor is a host
tensor when it lives on the CPU.  On a CPU-only machine every tensor is a host
tensor, so ``simulate=True`` (the default on a CPU) follows where a GPU run would
keep each tensor instead: a tensor is a *host* tensor only if

* it was marked with :meth:`SyncCounter.mark_host` (e.g. the batch as the data
  loader's collate step returns it, before the transfer to the device), or
* it was created while the counter was active by a factory without a ``device``
  argument or with the string ``"cpu"`` (``torch.arange(n)``, ``torch.tensor(...)``),
  or by one of the host copies above, or
* it was computed, while the counter was active, from host tensors only.

Every other tensor (parameters, optimiser state, gradients, the transferred batch,
anything created with ``device=x.device``) counts as a device tensor.  Moving a
host tensor "to the device" gives a new tensor (CPU's ``.to`` would return the same
object).  The rules err on the side of counting: code that means a host tensor says
so by giving no device.

Only calls made through torch's Python API are seen: the C++ autograd engine's own
backward kernels are not (they never synchronise), Python ``autograd.Function``
backwards are.  Each event says whether it happened under metrics logging (a frame
of ``log``, ``log_dict`` or ``log_metrics``, or inside ``torchmetrics``) and under a
:func:`deliberate` block, a synchronisation the code makes on purpose and names.
"""

import os
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["SyncCounter", "SyncEvent", "deliberate", "count_syncs"]

_VALUE_READS = {
    "item": "item",
    "tolist": "tolist",
    "numpy": "numpy",
    "__bool__": "bool",
    "__int__": "int",
    "__float__": "float",
    "__complex__": "complex",
    "__index__": "index",
    "__array__": "numpy",
    "__repr__": "repr",
    "__str__": "repr",
    "__format__": "repr",
}
_DATA_DEPENDENT = {
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "_unique",
    "_unique2",
    "bincount",
    "histc",
    "histogram",
    "equal",
    "allclose",
}
_LINALG = {
    "svd",
    "linalg_svd",
    "linalg_svdvals",
    "linalg_eig",
    "linalg_eigh",
    "linalg_eigvals",
    "linalg_eigvalsh",
    "linalg_inv",
    "inverse",
    "linalg_solve",
    "linalg_cholesky",
    "cholesky",
    "linalg_lstsq",
    "linalg_pinv",
    "pinverse",
    "linalg_matrix_rank",
    "linalg_lu_factor",
}
_TO_DATA = {"tensor", "as_tensor", "asarray"}
_INDEXING = {"__getitem__", "__setitem__", "index_put", "index_put_", "index"}
_LOGGING_FRAMES = {"log", "log_dict", "log_metrics"}
_TORCH_DIR = os.path.dirname(torch.__file__)
_HERE = os.path.abspath(__file__)

_local = threading.local()


@contextmanager
def deliberate(reason: str) -> Iterator[None]:
    """Mark a host synchronisation the code makes on purpose (costs nothing when no
    :class:`SyncCounter` is active); events inside carry ``reason``."""
    stack = getattr(_local, "reasons", None)
    if stack is None:
        stack = _local.reasons = []
    stack.append(reason)
    try:
        yield
    finally:
        stack.pop()


@dataclass(frozen=True)
class SyncEvent:
    """One synchronising call.

    Attributes:
        kind: what synchronises (``item``, ``bool``, ``nonzero``, ``copy to host``,
            ``blocking copy to device``, ``repeat_interleave``, ``mixed``, ...).
        call: the torch function or method called.
        where: ``file:line in function`` of the innermost caller outside torch.
        origin: package of that caller (``schnetpack_hessian``, ``schnetpack``,
            ``pytorch_lightning``, ...; ``other`` for scripts and tests).
        logging: the call happened under metrics logging.
        deliberate: the reason of an enclosing :func:`deliberate` block, or None.
    """

    kind: str
    call: str
    where: str
    origin: str
    logging: bool
    deliberate: Optional[str]

    @property
    def counts(self) -> bool:
        """Neither logging nor deliberate: a synchronisation to remove."""
        return not self.logging and self.deliberate is None


def _is_cpu_string(device: Any) -> bool:
    return isinstance(device, str) and device.split(":")[0] == "cpu"


def _origin(filename: str) -> str:
    parts = filename.replace("\\", "/").split("/")
    for package in (
        "schnetpack_hessian",
        "schnetpack",
        "pytorch_lightning",
        "lightning_fabric",
        "torchmetrics",
    ):
        if package in parts:
            return package
    return "other"


class SyncCounter(TorchFunctionMode):
    """Records every call that would synchronise the host with a device.

    Use as a context manager around the code to check; see the module docstring for
    what counts and how host and device tensors are told apart.

    Args:
        simulate: follow host and device tensors by their history (for CPU-only
            runs); False: a tensor is a host tensor when it is on the CPU.  Default:
            True when no CUDA device is available.
    """

    def __init__(self, simulate: Optional[bool] = None):
        super().__init__()
        self.simulate = (
            (not torch.cuda.is_available()) if simulate is None else simulate
        )
        self.events: List[SyncEvent] = []
        self._host = WeakIdKeyDictionary()
        #: ``torch.device`` objects read from host tensors (``host.device``), kept
        #: alive so that their ids stay theirs
        self._host_devices: Dict[int, torch.device] = {}

    # -- host or device ---------------------------------------------------------------

    def mark_host(self, *tensors: Any) -> None:
        """Declare tensors (or dicts/lists of them) to be host tensors."""
        for leaf in tree_flatten(list(tensors))[0]:
            if isinstance(leaf, torch.Tensor):
                self._host[leaf] = True

    def is_host(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` counts as a host tensor (see the module docstring)."""
        if not self.simulate:
            return tensor.device.type == "cpu"
        return tensor in self._host

    def _host_device(self, device: Any) -> bool:
        """Whether a ``device`` argument names the host: the string ``"cpu"``, or
        (simulating) the ``.device`` of a host tensor."""
        if _is_cpu_string(device):
            return True
        if isinstance(device, torch.device):
            if not self.simulate:
                return device.type == "cpu"
            return id(device) in self._host_devices
        return False

    # -- summaries --------------------------------------------------------------------

    def counted(self) -> List[SyncEvent]:
        """The events outside logging and outside :func:`deliberate` blocks."""
        return [e for e in self.events if e.counts]

    def summary(self, events: Optional[Sequence[SyncEvent]] = None) -> Dict[str, int]:
        """``{"kind at where": count}`` of ``events`` (default: :meth:`counted`)."""
        out: Dict[str, int] = {}
        for e in self.counted() if events is None else events:
            key = f"{e.kind} ({e.call}) at {e.where}"
            out[key] = out.get(key, 0) + 1
        return out

    def reset(self) -> None:
        """Forget the recorded events (host marks are kept)."""
        self.events = []

    # -- the mode ---------------------------------------------------------------------

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        tensors = [
            t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        ]
        host = [self.is_host(t) for t in tensors]
        kind = self._sync_kind(name, args, kwargs, tensors, host)
        if kind is not None:
            self._record(kind, name)
        out = func(*args, **kwargs)
        if self.simulate:
            out = self._tag(name, args, kwargs, tensors, host, out)
        return out

    def _sync_kind(self, name, args, kwargs, tensors, host) -> Optional[str]:
        on_device = [not h for h in host]
        any_device = any(on_device)
        if name in _VALUE_READS:
            return _VALUE_READS[name] if any_device else None
        if name == "cpu":
            return "copy to host" if any_device else None
        if name in ("to", "cuda"):
            return self._transfer_kind(name, args, kwargs, host)
        if name == "copy_" and len(tensors) >= 2:
            dst, src = host[0], host[1]
            if dst and not src:
                return "copy to host"
            if src and not dst and not kwargs.get("non_blocking", False):
                if len(args) < 3 or not args[2]:
                    return "blocking copy to device"
            return None
        if name in _TO_DATA or name == "new_tensor":
            return self._creation_copy(name, args, kwargs, tensors, host)
        if name in _DATA_DEPENDENT or name in _LINALG:
            return name if any_device else None
        if name == "where" and len(args) + len(kwargs) == 1:
            return "where (one argument)" if any_device else None
        if name == "one_hot":
            classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
            return "one_hot without num_classes" if any_device and classes < 0 else None
        if name == "repeat_interleave" and any_device:
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats", args[0])
            tensor_repeats = isinstance(repeats, torch.Tensor) and repeats.dim() > 0
            if tensor_repeats and kwargs.get("output_size") is None:
                return "repeat_interleave without output_size"
            return None
        if name in _INDEXING and any_device:
            flat = tree_flatten((args[1:], kwargs))[0]
            if any(
                isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)
                for t in flat
            ):
                return "boolean mask indexing"
        if any_device and any(h and t.dim() > 0 for t, h in zip(tensors, host)):
            return "mixed"
        return None

    def _target(self, name, args, kwargs) -> Tuple[Optional[str], bool]:
        """(``"host"``, ``"device"`` or None for no move, non_blocking) of to/cuda."""
        non_blocking = bool(kwargs.get("non_blocking", False))
        if name == "cuda":
            return "device", non_blocking
        device = kwargs.get("device")
        for a in args[1:]:
            if isinstance(a, bool):
                non_blocking = non_blocking or a
                break
            if isinstance(a, (str, int, torch.device)) and not isinstance(a, bool):
                device = a
                break
            if isinstance(a, torch.Tensor):
                return ("host" if self.is_host(a) else "device"), non_blocking
        if device is None:
            return None, non_blocking
        return ("host" if self._host_device(device) else "device"), non_blocking

    def _transfer_kind(self, name, args, kwargs, host) -> Optional[str]:
        target, non_blocking = self._target(name, args, kwargs)
        source_host = host[0] if host else True
        if target == "host" and not source_host:
            return "copy to host"
        if target == "device" and source_host and not non_blocking:
            return "blocking copy to device"
        return None

    def _creation_copy(self, name, args, kwargs, tensors, host) -> Optional[str]:
        device = kwargs.get("device")
        if name == "new_tensor":
            to_device = not host[0] if device is None else not self._host_device(device)
            data = args[1] if len(args) > 1 else kwargs.get("data")
        else:
            to_device = device is not None and not self._host_device(device)
            data = args[0] if args else kwargs.get("data")
        if isinstance(data, torch.Tensor):
            data_host = self.is_host(data)
            if device is None and name != "new_tensor":
                return None  # stays where it is
            if to_device and data_host and not kwargs.get("non_blocking", False):
                return "blocking copy to device"
            if not to_device and not data_host:
                return "copy to host"
            return None
        return "blocking copy to device" if to_device else None

    def _result_is_host(self, name, args, kwargs, tensors, host) -> bool:
        if name in ("cpu", "numpy", "tolist", "item"):
            return True
        if name in ("to", "cuda"):
            target, _ = self._target(name, args, kwargs)
            if target is None:
                return host[0]
            return target == "host"
        if name == "copy_":
            return host[0]
        device = kwargs.get("device")
        if name.startswith("new_"):
            return host[0] if device is None else self._host_device(device)
        if name in _TO_DATA and device is None and tensors:
            return host[0]
        if device is not None:
            return self._host_device(device)
        return all(host)

    def _tag(self, name, args, kwargs, tensors, host, out):
        result_host = self._result_is_host(name, args, kwargs, tensors, host)
        moved = name in ("to", "cuda") and host and host[0] and not result_host

        def tag(value):
            if isinstance(value, torch.device) and result_host and tensors:
                self._host_devices[id(value)] = value  # host.device
                return value
            if not isinstance(value, torch.Tensor):
                return value
            if moved and value is tensors[0]:
                # a GPU run would make a new device tensor; keep the host one apart
                value = value.clone()
            if result_host:
                self._host[value] = True
            elif value in self._host:
                del self._host[value]
            return value

        return tree_map(tag, out)

    def _record(self, kind: str, call: str) -> None:
        frames = traceback.extract_stack()[:-2]
        logging = any(
            f.name in _LOGGING_FRAMES or "/torchmetrics/" in f.filename for f in frames
        )
        caller = next(
            (
                f
                for f in reversed(frames)
                if not f.filename.startswith(_TORCH_DIR)
                and os.path.abspath(f.filename) != _HERE
                and "contextlib" not in f.filename
            ),
            frames[-1],
        )
        reasons = getattr(_local, "reasons", None)
        self.events.append(
            SyncEvent(
                kind=kind,
                call=call,
                where=f"{os.path.basename(caller.filename)}:{caller.lineno} in "
                f"{caller.name}",
                origin=_origin(caller.filename),
                logging=logging,
                deliberate=reasons[-1] if reasons else None,
            )
        )


@contextmanager
def count_syncs(*host: Any, simulate: Optional[bool] = None) -> Iterator[SyncCounter]:
    """``with count_syncs(cpu_batch) as counter: ...``: a :class:`SyncCounter` with
    ``host`` marked as host tensors."""
    counter = SyncCounter(simulate=simulate)
    counter.mark_host(*host)
    with counter:
        yield counter
