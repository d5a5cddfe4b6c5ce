"""``HessianTask``: SchNetPack's ``AtomisticTask`` whose checkpoints reload under torch >= 2.6.

:class:`schnetpack.task.AtomisticTask` stores the whole model (and the optimiser and
scheduler classes) as pickled hyperparameters.  From torch 2.6 on, ``torch.load``
defaults to ``weights_only=True``, and Lightning's ``trainer.test(ckpt_path="best")`` -
the last step of ``spktrain`` - fails with an ``UnpicklingError``; so does resuming.
``HessianTask`` registers exactly the classes and functions its own hyperparameters
pickle to (found by serialising them once) with ``torch.serialization.add_safe_globals``
when it is built, so its checkpoints reload with ``weights_only=True`` in any process
that builds the same task (spktrain's test, ``load_from_checkpoint`` and resume), while
foreign globals are still refused.  It also restores the grad mode after validation
and test steps and refuses DDP without ``find_unused_parameters=True``: together they
make SchNetPack's force (and Hessian) models train correctly under DDP (its Hessian
modules, marked as checked, do not give the warning they give under DDP outside
``HessianTask``).  A training step whose loss is not finite stops the training with
:class:`NonFiniteLossError` naming the batch's structures, before the optimiser step
can spread the NaN into the weights.  A Hessian loss with nonzero weight on a
training split without a single Hessian is refused (it would silently train an E/F
model) unless the data module sets ``allow_missing_hessians``; so is TF32 or autocast
(Lightning's ``matmul_precision``, ``precision="16-mixed"``) unless
``allow_reduced_precision`` (:mod:`.precision`).

A GPU step reads no device value on the host outside metrics logging and that
finiteness check (:mod:`schnetpack_hessian.syncs`): the batch's sizes are read from the
collated CPU batch before its transfer to the device
(:func:`~schnetpack_hessian.packing.register_packing`), and each
:class:`~schnetpack_hessian.HessianOutput` is told the probe scheme of the model's
Hessian module instead of recognising it from the probes.
"""

import _compat_pickle
import io
import pickletools
import warnings
import zipfile
from importlib import import_module
from typing import Any, Dict, List, Optional

import torch
import schnetpack.properties as structure
from schnetpack.task import AtomisticTask

from schnetpack_hessian import properties
from schnetpack_hessian.errors import HessianDataError
from schnetpack_hessian.hessian import Hessian
from schnetpack_hessian.losses import HessianOutput
from schnetpack_hessian.packing import Packing, register_packing
from schnetpack_hessian.precision import guard_precision
from schnetpack_hessian.syncs import deliberate
from schnetpack_hessian.teacher import Teacher

__all__ = ["HessianTask", "NonFiniteLossError", "pickled_globals"]

# Lightning warns whenever a LightningModule's transfer hook runs with a data module;
# HessianTask's reads the batch's sizes and then transfers as Lightning does, so the
# warning only tells the user that it works as intended.
warnings.filterwarnings(
    "ignore",
    message=r"You have overridden `transfer_batch_to_device` in `LightningModule` but "
    r"have passed in a `LightningDataModule`",
)


# save_hyperparameters sees the teacher among HessianTask's arguments before the task
# drops it from its hyperparameters (the checkpoints are the student's).
warnings.filterwarnings(
    "ignore", message=r"Attribute 'teacher' is an instance of `nn.Module`"
)


#: seed base of the fixed validation/test probes of teacher labels (+ batch index)
_FIXED_PROBE_SEED = 7919


class NonFiniteLossError(RuntimeError):
    """A training loss is NaN or infinite; the message names the batch's structures."""


def _resolve(module: str, qualname: str) -> Any:
    # protocol-2 pickles name Python 2 modules (``__builtin__``); map as Unpickler does
    module, qualname = _compat_pickle.NAME_MAPPING.get(
        (module, qualname),
        (_compat_pickle.IMPORT_MAPPING.get(module, module), qualname),
    )
    obj: Any = import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def pickled_globals(obj: Any) -> List[Any]:
    """Classes and functions that ``torch.save(obj)`` refers to by name."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as archive:
        data = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        payload = archive.read(data)
    found = []
    for opcode, arg, _ in pickletools.genops(payload):
        if opcode.name == "GLOBAL":
            module, name = arg.split(" ", 1)
            obj = _resolve(module, name)
            # instances such as torch.float32 are allowed already and have no name
            if hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
                found.append(obj)
    return found


class HessianTask(AtomisticTask):
    """:class:`~schnetpack.task.AtomisticTask` whose checkpoints reload with
    ``weights_only=True`` (torch >= 2.6); same arguments as ``AtomisticTask``.

    Outputs may mix :class:`~schnetpack.task.ModelOutput` (energy, forces) and
    :class:`~schnetpack_hessian.HessianOutput`.  Validation and test need gradients
    (the model differentiates the energy), so run Lightning with
    ``inference_mode=False``, as SchNetPack's trainer configs do.
    """

    def __init__(
        self,
        *args,
        allow_reduced_precision: bool = False,
        teacher: Optional[Teacher] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        #: train Hessians under TF32/autocast anyway (:mod:`..precision`)
        self.allow_reduced_precision = bool(allow_reduced_precision)
        self._loss_terms: Dict[str, torch.Tensor] = {}
        self._declare_probe_schemes()
        # the frozen model whose products are the Hessian labels (None: the data's);
        # not a submodule and not a hyperparameter: the checkpoints are the student's
        object.__setattr__(self, "teacher", teacher)
        for hparams in (self._hparams, getattr(self, "_hparams_initial", None)):
            if hparams is not None:
                hparams.pop("teacher", None)
        self._student_hvp = self._teacher_probe_module() if teacher else None
        self._mark_ddp_checked()
        add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
        if add_safe_globals is not None:
            add_safe_globals(pickled_globals(dict(self.hparams)))

    def _declare_probe_schemes(self) -> None:
        """Tell every :class:`HessianOutput` the probe scheme of the Hessian module
        whose products it compares (so the loss need not read the probes).

        Raises:
            ValueError: an output declares another scheme than the module draws.
        """
        modules = [
            m
            for m in self.model.modules()
            if isinstance(m, Hessian) and m.mode == "hvp"
        ]
        for output in self.outputs:
            if not isinstance(output, HessianOutput):
                continue
            found = {
                m.probe
                for m in modules
                if m.hvp_key == output.hvp_key and m.probes_key == output.probes_key
            }
            if len(found) != 1:
                continue
            (probe,) = found
            declared = getattr(output, "probe", None)
            if declared is not None and declared != probe:
                raise ValueError(
                    f"HessianTask: HessianOutput {output.name!r} declares "
                    f"probe={declared!r}, but the model's Hessian module draws "
                    f"{probe!r} probes; remove the output's probe or make them agree"
                )
            output.probe = probe

    def _teacher_probe_module(self) -> Hessian:
        """The student's HVP-mode Hessian module, whose probes the teacher labels.

        Raises:
            ValueError: no such module, or no output that compares product labels.
        """
        modules = [
            m
            for m in self.model.modules()
            if isinstance(m, Hessian) and m.mode == "hvp"
        ]
        forms = [
            o for o in self.outputs if isinstance(o, HessianOutput) and o.form == "hvp"
        ]
        if len(modules) != 1 or not forms:
            raise ValueError(
                "HessianTask: a teacher labels the products of the student's "
                f"Hessian(mode='hvp') module (found {len(modules)}) for a "
                "HessianOutput(target_form='hvp') (found "
                f"{len(forms)}); spktrain's +distill=teacher sets both up"
            )
        return modules[0]

    def with_teacher_labels(
        self, batch: Dict[str, torch.Tensor], fixed_probes: Optional[int] = None
    ):
        """The batch with the teacher's product labels: the student's probes
        (:data:`~schnetpack_hessian.properties.hessian_label_probes`, drawn by its
        Hessian module unless the batch holds stored ones) and the teacher's exact
        products along them (:data:`~schnetpack_hessian.properties.hessian_label_hvp`),
        both ``(ΣN, k, 3)``.  Without a teacher the batch is returned as it is.

        Args:
            fixed_probes: draw the probes from a generator seeded with this number
                (validation and test pass the batch index, so that every epoch's
                validation loss is measured along the same probes and early
                stopping compares like with like); None: the module's own stream.
        """
        if self.teacher is None:
            return batch
        device = batch[structure.R].device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        probes = batch.get(properties.hessian_label_probes)
        if probes is None:
            generator = None
            if fixed_probes is not None:
                generator = torch.Generator(device=device)
                generator.manual_seed(_FIXED_PROBE_SEED + int(fixed_probes))
            probes = self._student_hvp.draw_probes(batch, generator).transpose(0, 1)
            batch[properties.hessian_label_probes] = probes
        products = self.teacher.hvp(batch, probes.transpose(0, 1).contiguous())
        batch[properties.hessian_label_hvp] = products.transpose(0, 1)
        return batch

    def _mark_ddp_checked(self) -> None:
        """Tell the model's Hessian modules that this task checks the DDP strategy
        (:meth:`on_fit_start`), so they do not warn about it; the mark is not
        pickled, and is set again in each process that fits."""
        for module in self.model.modules():
            if isinstance(module, Hessian):
                module._ddp_checked = True

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Lightning's transfer, after reading the batch's sizes on the host.

        The sizes of a collated CPU batch cost nothing to read; they are registered
        for the transferred ``_n_atoms`` (:mod:`schnetpack_hessian.packing`), so that
        the Hessian module and its loss never read them on the device.
        """
        packing = None
        if isinstance(batch, dict) and structure.n_atoms in batch:
            if batch[structure.n_atoms].device.type == "cpu":
                packing = Packing.from_batch(batch, keep_positions=True)
        moved = super().transfer_batch_to_device(batch, device, dataloader_idx)
        if packing is not None:
            register_packing(
                moved[structure.n_atoms], packing, moved.get(structure.idx_m)
            )
        return moved

    def on_fit_start(self) -> None:
        strategy = self.trainer.strategy
        ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)
        if ddp_kwargs is not None and not ddp_kwargs.get("find_unused_parameters"):
            raise RuntimeError(
                f"HessianTask: {type(strategy).__name__} without "
                "find_unused_parameters=True does not all-reduce the gradients of "
                "models that differentiate the energy in forward (forces, Hessians): "
                "each rank would train on its own shard. Use "
                "strategy='ddp_find_unused_parameters_true' (spktrain: "
                "trainer=ddp_hessian)."
            )
        self._mark_ddp_checked()
        self._check_hessian_targets()
        self._check_precision()
        super().on_fit_start()

    def loss_fn(self, pred, batch):
        """Weighted sum of the outputs' losses (as ``AtomisticTask``); the terms are
        kept (as tensors, no host sync) to name the culprit of a non-finite loss."""
        loss = 0.0
        self._loss_terms = {}
        for output in self.outputs:
            term = output.calculate_loss(pred, batch)
            self._loss_terms[output.name] = term
            loss += term
        return loss

    def training_step(self, batch, batch_idx):
        """``AtomisticTask``'s step, stopped at the first non-finite loss.

        The check costs one host sync per step (``torch.isfinite(loss)`` read on the
        host) and, under DDP, one boolean all-reduce so that every rank stops at the
        same step; it comes before the optimiser step, so the weights stay finite.

        Raises:
            NonFiniteLossError: the loss is NaN or infinite; the message gives the
                epoch, the step, every loss term and the batch's structures (dataset
                indices ``_idx`` in the training file).
        """
        loss = super().training_step(self.with_teacher_labels(batch), batch_idx)
        with deliberate("non-finite loss guard"):
            finite = bool(torch.isfinite(torch.as_tensor(loss)).all())
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            # every rank stops at the same step (one stopping alone would leave the
            # others waiting in the gradient all-reduce until the timeout)
            with deliberate("non-finite loss guard"):
                everywhere = bool(
                    trainer.strategy.reduce_boolean_decision(finite, all=True)
                )
            if finite and not everywhere:
                raise NonFiniteLossError(
                    f"HessianTask: the training loss is not finite on another rank at "
                    f"epoch {self.current_epoch}, step {self.global_step}; that rank "
                    "names its batch's structures"
                )
        if not finite:
            raise NonFiniteLossError(self._non_finite_message(loss, batch, batch_idx))
        return loss

    def _non_finite_message(self, loss, batch, batch_idx) -> str:
        terms = ", ".join(
            f"{name} {float(term):.4g}" for name, term in self._loss_terms.items()
        )
        idx = batch.get(structure.idx)
        indices = "unknown" if idx is None else str(idx.reshape(-1).tolist())
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer else None
        datapath = getattr(datamodule, "datapath", None)
        where = f" of {datapath}" if datapath else ""
        return (
            f"HessianTask: training loss is {float(loss)} at epoch "
            f"{self.current_epoch}, step {self.global_step} (batch {batch_idx}; "
            f"terms: {terms}); the batch holds structures {indices}{where}. Check "
            "them with spkhess-convert --check, or lower the learning rate if the "
            "model diverged; the optimiser step was not taken"
        )

    def _check_precision(self) -> None:
        """Hessian training refuses TF32 and autocast unless the user opted in (a
        Hessian output with loss weight 0, for its metrics only, gets a warning).

        Raises:
            ReducedPrecisionError: see :func:`~schnetpack_hessian.precision.guard_precision`.
        """
        hessians = [o for o in self.outputs if isinstance(o, HessianOutput)]
        if not hessians:
            return
        weighted = any(float(o.loss_weight) != 0.0 for o in hessians)
        dtype = next(self.parameters()).dtype
        guard_precision(
            "HessianTask",
            self.device,
            dtype,
            allow=self.allow_reduced_precision,
            opt_in="task.allow_reduced_precision=True "
            "(HessianTask(allow_reduced_precision=True))",
            trainer_precision=getattr(self._trainer, "precision", None),
            refuse=weighted,
        )

    def _check_hessian_targets(self) -> None:
        """A Hessian loss with nonzero weight needs Hessians in the training split.

        Raises:
            HessianDataError: the data module's training split holds no Hessian and
                it does not set ``allow_missing_hessians``.
        """
        weighted = [
            o
            for o in self.outputs
            if isinstance(o, HessianOutput)
            and o.form == "hessian"
            and float(o.loss_weight) != 0.0
        ]
        datamodule = getattr(self.trainer, "datamodule", None)
        check = getattr(datamodule, "has_training_hessians", None)
        if not weighted or check is None:
            return
        if getattr(datamodule, "allow_missing_hessians", False) or check():
            return
        raise HessianDataError(
            f"{datamodule.datapath}: the training split holds no Hessian, but "
            f"{weighted[0].name!r} has loss weight {weighted[0].loss_weight}: this would "
            "train an E/F model and report NaN Hessian errors. Use data with Hessians, "
            "set the Hessian loss weight to 0 (globals.hessian_weight=0), or train anyway "
            "with data.allow_missing_hessians=True"
        )

    # AtomisticTask enables gradients in validation/test and leaves them on; under DDP
    # the next evaluation forward then prepares the reducer for a backward that never
    # comes and training fails ("initialize_buckets must NOT be called during autograd
    # execution").  Restore the caller's grad mode after each step.

    def validation_step(self, batch, batch_idx):
        with torch.set_grad_enabled(torch.is_grad_enabled()):
            labelled = self.with_teacher_labels(batch, fixed_probes=batch_idx)
            return super().validation_step(labelled, batch_idx)

    def test_step(self, batch, batch_idx):
        with torch.set_grad_enabled(torch.is_grad_enabled()):
            labelled = self.with_teacher_labels(batch, fixed_probes=batch_idx)
            return super().test_step(labelled, batch_idx)
