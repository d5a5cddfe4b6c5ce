r"""Hessian losses and metrics for :class:`schnetpack.task.AtomisticTask`.

Per molecule :math:`m` with :math:`N_m` atoms and residual
:math:`\Delta_m = \hat H_m - H_m` (a ``3N_m × 3N_m`` matrix), the full-Hessian losses are

.. math::

    L_\mathrm{MSE} = \frac{1}{|M|}\sum_{m\in M} \frac{\lVert\Delta_m\rVert_F^2}{9N_m^2},
    \qquad
    L_\mathrm{MAE} = \frac{1}{|M|}\sum_{m\in M} \frac{\sum_{ab}|\Delta_{m,ab}|}{9N_m^2},
    \qquad
    L_\mathrm{RMSE} = \sqrt{L_\mathrm{MSE}},

the study's normalisation (mean over each molecule's entries, then over molecules),
where :math:`M` are the molecules *with* a Hessian target: a target that is all-NaN (the
data layer's mark of "no Hessian") removes the molecule from loss and metrics.

In HVP mode only :math:`\Delta_m v` is known for the probes :math:`v` the model drew.
The per-molecule squared error is estimated without bias by

* ``gaussian`` / ``rademacher`` probes (:math:`E[vv^T] = I`):
  :math:`\lVert\Delta_m\rVert_F^2 \approx \lVert\Delta_m v\rVert^2`, i.e. each probe's
  squared residual is scaled by :math:`1/(9N_m^2)`;
* ``rows`` probes (one-hot, uniform over the :math:`3N_m` rows, :math:`E[vv^T]=I/3N_m`):
  :math:`\lVert\Delta_m\rVert_F^2 \approx 3N_m\lVert\Delta_m v\rVert^2`, i.e. scaled by
  :math:`1/(3N_m)`;

and averaged over the ``k`` probes, so :math:`E[L^{HVP}_\mathrm{MSE}] =
L_\mathrm{MSE}` (Hutchinson).  With ``rows`` the residual entries are exact Hessian
entries, so MAE is estimated without bias too; with isotropic probes it is not defined
and ``loss="mae"`` raises.  The probe scheme is the Hessian module's, declared to
:class:`HessianOutput` (``probe``, set by :class:`~schnetpack_hessian.HessianTask`
from the model); without a declaration it is recognised from the probes themselves
(one-hot per molecule ⇒ rows), which reads device values on the host.

Nothing here reads a device value on the host when the scheme is declared: the sizes
come from the batch's host bookkeeping (:mod:`schnetpack_hessian.packing`).
"""

import math
import numbers
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torchmetrics import Metric

import schnetpack.properties as spk_properties
from schnetpack.task import ModelOutput

from schnetpack_hessian import properties
from schnetpack_hessian.hessian import PROBES, was_computed
from schnetpack_hessian.packing import PackedBatch, packed_sizes

__all__ = [
    "HessianOutput",
    "HessianMAE",
    "HessianRMSE",
    "HessianErrors",
    "hessian_errors",
    "hvp_label_errors",
]

LOSSES = ("mse", "mae", "rmse")
#: Forms of a Hessian target (:class:`HessianOutput`).
TARGET_FORMS = ("hessian", "hvp")


class HessianErrors:
    """Per-molecule error sums of one batch.

    Attributes:
        sse: sum of squared errors per molecule ``(B,)`` (exact or unbiased estimate).
        sae: sum of absolute errors per molecule ``(B,)``, or None where not estimable.
        n_entries: number of Hessian entries per molecule, ``9N²``, ``(B,)``.
        valid: molecules that have a Hessian target, ``(B,)`` bool.
    """

    def __init__(
        self,
        sse: torch.Tensor,
        sae: Optional[torch.Tensor],
        n_entries: torch.Tensor,
        valid: torch.Tensor,
    ):
        self.sse = sse
        self.sae = sae
        self.n_entries = n_entries
        self.valid = valid


def _complete(
    finite: torch.Tensor, owner: torch.Tensor, n_molecules: int
) -> torch.Tensor:
    """Molecules all of whose parts are finite ``(B,)``, from a per-part mask
    ``finite`` and each part's molecule ``owner`` (no host read)."""
    bad = torch.zeros(n_molecules, device=finite.device, dtype=torch.long)
    bad.index_add_(0, owner, (~finite).long())
    return bad == 0


def _molecule_has_target(
    target: torch.Tensor, block_m: torch.Tensor, n_molecules: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(finite-block mask ``(ΣN²,)``, molecule has a complete Hessian ``(B,)``)."""
    finite_block = torch.isfinite(target).flatten(1).all(dim=1)
    valid = _complete(finite_block, block_m, n_molecules)
    return valid[block_m], valid


def _is_row_probe(probes: torch.Tensor, idx_m: torch.Tensor, n_molecules: int) -> bool:
    """True when every probe is one-hot within every molecule (the ``rows`` scheme);
    reads the probes on the host."""
    if not bool(((probes == 0) | (probes == 1)).all()):
        return False
    per_mol = probes.new_zeros((probes.shape[0], n_molecules))
    per_mol.index_add_(1, idx_m, probes.sum(-1))
    return bool((per_mol == 1).all())


def hessian_errors(
    pred: Dict[str, torch.Tensor],
    target: torch.Tensor,
    hessian_key: str = properties.hessian,
    hvp_key: str = properties.hessian_hvp,
    probes_key: str = properties.hessian_probes,
    probe: Optional[str] = None,
) -> HessianErrors:
    """Per-molecule Hessian errors of a prediction against block-layout targets.

    Uses the full Hessian ``pred[hessian_key]`` when present (and not the empty
    placeholder of an HVP-mode ``Hessian`` with ``schedule={"evaluation": "full"}`` in
    training), else the HVPs.

    Args:
        pred: model outputs with ``_n_atoms`` and either ``hessian`` ``(ΣN², 3, 3)`` or
            ``hessian_hvp`` and ``hessian_probes`` ``(k, ΣN, 3)``.
        target: reference Hessians ``(ΣN², 3, 3)``; all-NaN for molecules without one.
        probe: the probe scheme of the HVPs (``"gaussian"``, ``"rademacher"``,
            ``"rows"``); None: recognised from the probes (a host synchronisation).
    """
    if spk_properties.n_atoms not in pred:
        raise KeyError(
            "HessianOutput: the predictions have no '_n_atoms'; compute Hessians with "
            "schnetpack_hessian.Hessian, which writes it"
        )
    n_atoms = pred[spk_properties.n_atoms]
    n_mol = len(n_atoms)
    packed = packed_sizes(n_atoms)
    expected = packed.packing.n_blocks
    if (
        target.dim() != 3
        or tuple(target.shape[1:]) != (3, 3)
        or target.shape[0] != expected
    ):
        raise ValueError(
            f"HessianOutput: target Hessian has shape {tuple(target.shape)}, expected "
            f"(ΣN², 3, 3) = ({expected}, 3, 3) for molecules of "
            f"{list(packed.packing.n_atoms)} atoms"
        )
    block_m, _, j_global = packed.blocks
    block_ok, valid = _molecule_has_target(target, block_m, n_mol)
    clean_target = torch.where(
        block_ok[:, None, None], target, torch.zeros_like(target)
    )
    n_entries = (9 * n_atoms * n_atoms).to(target.dtype)

    if was_computed(pred, hessian_key):
        if tuple(pred[hessian_key].shape) != (expected, 3, 3):
            raise ValueError(
                f"HessianOutput: predicted Hessian has shape "
                f"{tuple(pred[hessian_key].shape)}, expected ({expected}, 3, 3) for "
                f"molecules of {list(packed.packing.n_atoms)} atoms"
            )
        diff = pred[hessian_key] - clean_target
        diff = torch.where(block_ok[:, None, None], diff, torch.zeros_like(diff))
        sse = diff.new_zeros(n_mol).index_add(0, block_m, diff.pow(2).sum((1, 2)))
        sae = diff.new_zeros(n_mol).index_add(0, block_m, diff.abs().sum((1, 2)))
        return HessianErrors(sse, sae, n_entries, valid)

    if not was_computed(pred, hvp_key) or probes_key not in pred:
        raise KeyError(
            f"HessianOutput: the predictions hold neither a computed '{hessian_key}' "
            f"nor '{hvp_key}' with '{probes_key}'"
        )
    hvp, probes = pred[hvp_key], pred[probes_key]
    # reference products (H_ref v)[off + i] = Σ_j block(i, j) @ v[off + j]
    ref_hvp = hvp.new_zeros(hvp.shape).index_add(
        1,
        packed.i_global,
        torch.einsum("bcd,kbd->kbc", clean_target, probes[:, j_global]),
    )
    return _product_errors(hvp, ref_hvp, probes, valid, n_entries, packed, probe)


def hvp_label_errors(
    pred: Dict[str, torch.Tensor],
    labels: torch.Tensor,
    hvp_key: str = properties.hessian_hvp,
    probes_key: str = properties.hessian_probes,
    probe: Optional[str] = None,
) -> HessianErrors:
    """Per-molecule Hessian errors of predicted products against product labels.

    The labels are ``H v`` along the probes the model used (the batch's
    :data:`~schnetpack_hessian.properties.hessian_label_probes`, which the Hessian
    module takes instead of drawing its own): stored by ``spkhess-generate label`` or
    a teacher's (:class:`~schnetpack_hessian.Teacher`).  Molecules with a non-finite
    label are masked out.  The estimate and its scaling are those of
    :func:`hessian_errors` for HVPs.

    Args:
        pred: model outputs with ``_n_atoms``, ``hessian_hvp`` and ``hessian_probes``
            ``(k, ΣN, 3)``.
        labels: the label products per atom ``(ΣN, k, 3)`` (Hessian unit).
        probe: the probe scheme of the labels' probes; None: recognised from them.
    """
    n_atoms = pred[spk_properties.n_atoms]
    n_mol = len(n_atoms)
    packed = packed_sizes(n_atoms)
    if not was_computed(pred, hvp_key) or probes_key not in pred:
        raise KeyError(
            f"HessianOutput: product labels need predicted '{hvp_key}' with "
            f"'{probes_key}' (Hessian(mode='hvp'))"
        )
    hvp, probes = pred[hvp_key], pred[probes_key]
    if labels.dim() != 3 or tuple(labels.transpose(0, 1).shape) != tuple(hvp.shape):
        raise ValueError(
            f"HessianOutput: product labels have shape {tuple(labels.shape)}, expected "
            f"(ΣN, k, 3) = ({hvp.shape[1]}, {hvp.shape[0]}, 3) like the predicted "
            "products"
        )
    ref_hvp = labels.transpose(0, 1).to(hvp.dtype)
    finite_atom = torch.isfinite(ref_hvp).all(dim=2).all(dim=0)
    valid = _complete(finite_atom, packed.idx_m, n_mol)
    ref_hvp = torch.where(
        finite_atom[None, :, None], ref_hvp, torch.zeros_like(ref_hvp)
    )
    n_entries = (9 * n_atoms * n_atoms).to(hvp.dtype)
    return _product_errors(hvp, ref_hvp, probes, valid, n_entries, packed, probe)


def _product_errors(
    hvp: torch.Tensor,
    ref_hvp: torch.Tensor,
    probes: torch.Tensor,
    valid: torch.Tensor,
    n_entries: torch.Tensor,
    packed: PackedBatch,
    probe: Optional[str],
) -> HessianErrors:
    """Unbiased per-molecule error sums from products ``(k, ΣN, 3)`` (module
    docstring): rows scaled by ``3N``, isotropic probes by 1 (no MAE)."""
    n_atoms = packed.n_atoms
    n_mol = len(valid)
    idx_m = packed.idx_m
    residual = torch.where(
        valid[idx_m][None, :, None], hvp - ref_hvp, torch.zeros_like(hvp)
    )
    k = hvp.shape[0]
    sq = residual.new_zeros((k, n_mol)).index_add(1, idx_m, residual.pow(2).sum(-1))
    if probe is None:
        probe = "rows" if _is_row_probe(probes, idx_m, n_mol) else "gaussian"
    if probe == "rows":
        scale = (3 * n_atoms).to(hvp.dtype)  # 3N rows, each probe sees one of them
        ab = residual.new_zeros((k, n_mol)).index_add(1, idx_m, residual.abs().sum(-1))
        sae = scale * ab.mean(0)
    else:
        scale = torch.ones(n_mol, dtype=hvp.dtype, device=hvp.device)
        sae = None
    sse = scale * sq.mean(0)
    return HessianErrors(sse, sae, n_entries, valid)


def _valid_sum(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum over the molecules with a target (no boolean indexing: no host read)."""
    return torch.where(valid, values, torch.zeros_like(values)).sum()


class _HessianErrorMetric(Metric):
    """Pooled error over all Hessian entries of all molecules with a target."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state(
            "total",
            default=torch.tensor(0.0, dtype=torch.float64),
            dist_reduce_fx="sum",
        )
        self.add_state(
            "count",
            default=torch.tensor(0.0, dtype=torch.float64),
            dist_reduce_fx="sum",
        )

    def update(self, error_sum: torch.Tensor, count: torch.Tensor) -> None:
        """Add a batch's summed error and its number of entries."""
        self.total += error_sum.detach().to(torch.float64)
        self.count += count.detach().to(torch.float64)

    def use(self, errors: HessianErrors) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError


class HessianMAE(_HessianErrorMetric):
    """Mean absolute error over Hessian entries (target unit)."""

    def use(self, errors: HessianErrors):
        if errors.sae is None:
            return None
        return _valid_sum(errors.sae, errors.valid), _valid_sum(
            errors.n_entries, errors.valid
        )

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class HessianRMSE(_HessianErrorMetric):
    """Root-mean-square error over Hessian entries (target unit)."""

    def use(self, errors: HessianErrors):
        return _valid_sum(errors.sse, errors.valid), _valid_sum(
            errors.n_entries, errors.valid
        )

    def compute(self) -> torch.Tensor:
        return torch.sqrt(self.total / self.count)


class HessianOutput(ModelOutput):
    """Loss and metrics of predicted Hessians (full or HVP) against stored Hessians.

    Use with :class:`~schnetpack_hessian.Hessian` in the model.  The target is the
    batch's ``hessian`` in block layout ``(ΣN², 3, 3)``; molecules whose target is all-NaN
    (no Hessian) are masked out of loss and metrics.  The mode follows the prediction:
    full when ``hessian`` is predicted, HVP otherwise (so validation can report
    full-Hessian metrics, with ``Hessian(schedule={"evaluation": "full"})``, while training uses HVP).
    See the module docstring for the normalisation and the HVP scaling.

    Args:
        name: name of the output (the predicted full Hessian's key).
        loss: ``"mse"``, ``"mae"`` or ``"rmse"`` (per-molecule normalised).
        loss_weight: weight in the task's composite loss.
        metrics: metrics by name; default ``{"MAE": HessianMAE(), "RMSE": HessianRMSE()}``.
            Other torchmetrics metrics get the valid predicted and target blocks (full
            mode only).
        target_property: key of the target in the batch (default: ``name``).
        hvp_key: key of the predicted Hessian-vector products.
        probes_key: key of the probes.
        constraints: SchNetPack constraints applied before loss and metrics.
        probe: the probe scheme of the model's Hessian module (``"gaussian"``,
            ``"rademacher"`` or ``"rows"``); None (default): recognised from the
            probes, which reads device values on the host at every step.
            :class:`~schnetpack_hessian.HessianTask` sets it from the model.
        target_form: ``"hessian"`` (the default): the target is a Hessian in block
            layout; ``"hvp"``: the target is product labels ``(ΣN, k, 3)`` along the
            batch's :data:`~schnetpack_hessian.properties.hessian_label_probes`
            (stored curvature labels, or a teacher's in
            :class:`~schnetpack_hessian.HessianTask`), compared with the model's
            products along the same probes (:func:`hvp_label_errors`); the default
            ``target_property`` is then
            :data:`~schnetpack_hessian.properties.hessian_label_hvp`.
    """

    def __init__(
        self,
        name: str = properties.hessian,
        loss: str = "mse",
        loss_weight: float = 1.0,
        metrics: Optional[Dict[str, Metric]] = None,
        target_property: Optional[str] = None,
        hvp_key: str = properties.hessian_hvp,
        probes_key: str = properties.hessian_probes,
        constraints: Optional[List[nn.Module]] = None,
        probe: Optional[str] = None,
        target_form: str = "hessian",
    ):
        if target_form not in TARGET_FORMS:
            raise ValueError(
                f"HessianOutput: target_form must be one of {TARGET_FORMS}, got "
                f"{target_form!r}"
            )
        if target_form == "hvp" and target_property is None:
            target_property = properties.hessian_label_hvp
        if loss not in LOSSES:
            raise ValueError(
                f"HessianOutput: loss must be one of {LOSSES}, got {loss!r}"
            )
        if (
            isinstance(loss_weight, bool)
            or not isinstance(loss_weight, numbers.Real)
            or not math.isfinite(loss_weight)
            or loss_weight < 0
        ):
            raise ValueError(
                f"HessianOutput: loss_weight must be a finite number >= 0, got "
                f"{loss_weight!r}"
            )
        if probe is not None and probe not in PROBES:
            raise ValueError(
                f"HessianOutput: probe must be None or one of {PROBES}, got {probe!r}"
            )
        if metrics is None:
            metrics = {"MAE": HessianMAE(), "RMSE": HessianRMSE()}
        super().__init__(
            name=name,
            loss_fn=None,
            loss_weight=loss_weight,
            metrics=metrics,
            constraints=constraints,
            target_property=target_property,
        )
        self.loss = loss
        self.hvp_key = hvp_key
        self.probes_key = probes_key
        self.probe = probe
        self.target_form = target_form

    def errors(self, pred: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor]):
        """Per-molecule errors of this batch (see :func:`hessian_errors`)."""
        if self.target_property not in target:
            raise KeyError(
                f"HessianOutput: the batch has no target '{self.target_property}'; "
                "load Hessians with the data set's load_properties"
            )
        if self.form == "hvp":
            return hvp_label_errors(
                pred,
                target[self.target_property],
                self.hvp_key,
                self.probes_key,
                getattr(self, "probe", None),
            )
        return hessian_errors(
            pred,
            target[self.target_property],
            self.name,
            self.hvp_key,
            self.probes_key,
            getattr(self, "probe", None),  # modules pickled before it existed
        )

    def calculate_loss(self, pred, target) -> torch.Tensor:
        if self.loss_weight == 0:
            return 0.0
        if not self.has_prediction(pred):
            raise ValueError(
                f"HessianOutput: loss_weight={self.loss_weight} but the model computed "
                "no Hessian in training (Hessian schedule training='none'); set loss_weight=0"
            )
        err = self.errors(pred, target)
        if self.loss == "mae":
            if err.sae is None:
                raise ValueError(
                    "HessianOutput: loss='mae' in HVP mode needs row probes "
                    "(Hessian(probe='rows')); Gaussian/Rademacher probes give no unbiased "
                    "MAE. Use loss='mse' or probe='rows'."
                )
            per_mol = err.sae / err.n_entries
        else:
            per_mol = err.sse / err.n_entries
        n_valid = err.valid.sum()
        per_mol = torch.where(err.valid, per_mol, torch.zeros_like(per_mol))
        loss = per_mol.sum() / n_valid.clamp(min=1)
        if self.loss == "rmse":
            loss = torch.sqrt(loss + torch.finfo(loss.dtype).tiny)
        return self.loss_weight * loss

    @property
    def form(self) -> str:
        """The target's form, ``"hessian"`` or ``"hvp"`` (outputs pickled before
        product labels existed compare Hessians)."""
        return getattr(self, "target_form", "hessian")

    def has_prediction(self, pred: Dict[str, torch.Tensor]) -> bool:
        """False when the model computed no Hessian for this batch (placeholders)."""
        if self.form == "hvp":
            return was_computed(pred, self.hvp_key)
        return was_computed(pred, self.name) or was_computed(pred, self.hvp_key)

    def update_metrics(self, pred, target, subset) -> None:
        if not self.has_prediction(pred):
            return
        err = None
        for metric in self.metrics[subset].values():
            if isinstance(metric, _HessianErrorMetric):
                err = err if err is not None else self.errors(pred, target)
                stats = metric.use(err)
                if stats is not None:
                    metric.update(*stats)
            elif self.form == "hessian" and was_computed(pred, self.name):
                n_atoms = pred[spk_properties.n_atoms]
                block_m, _, _ = packed_sizes(n_atoms).blocks
                ref = target[self.target_property]
                block_ok, _ = _molecule_has_target(ref, block_m, len(n_atoms))
                metric(pred[self.name][block_ok], ref[block_ok])
