"""Lightning callbacks for Hessian training runs."""

import json
import logging
import os
from typing import Dict, Optional, Sequence

from pytorch_lightning import Callback, LightningModule, Trainer

from schnetpack_hessian.evaluation import evaluate

__all__ = ["ExtrapolationReport"]

log = logging.getLogger(__name__)


class ExtrapolationReport(Callback):
    """After testing, report the model's errors on held-out geometries.

    Evaluates on the data module's test split and on each extrapolation set of a
    :class:`~schnetpack_hessian.data.HessianDataModule` (IRC and normal-mode-sampled
    structures in the study's protocol), prints a table and writes ``path`` (JSON).
    Only rank 0 reports.

    Args:
        path: JSON file for the report (relative to the run directory).
        kinds: extrapolation sets to evaluate (default: all the data module offers).
        units: unit labels printed with the table, e.g. ``{"energy": "kcal/mol"}``.
    """

    def __init__(
        self,
        path: str = "extrapolation_report.json",
        kinds: Optional[Sequence[str]] = None,
        units: Optional[Dict[str, str]] = None,
    ):
        self.path = path
        self.kinds = kinds
        self.units = dict(units or {})
        self.report: Dict[str, Dict[str, float]] = {}

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        datamodule = trainer.datamodule
        sets = {"test": datamodule.test_dataloader()}
        kinds = (
            self.kinds
            if self.kinds is not None
            else getattr(datamodule, "extrapolation_kinds", ())
        )
        for kind in kinds:
            sets[kind] = datamodule.extrapolation_dataloader(kind)
        self.report = {
            name: evaluate(pl_module.model, loader) for name, loader in sets.items()
        }
        with open(self.path, "w") as f:
            json.dump({"units": self.units, "errors": self.report}, f, indent=2)
        print(self.format_table())
        log.info(f"extrapolation report written to {os.path.abspath(self.path)}")

    def format_table(self) -> str:
        """The report as a fixed-width text table."""
        cols = [
            f"{p}_{m}" for p in ("energy", "forces", "hessian") for m in ("mae", "rmse")
        ]
        head = f"{'set':8s} {'n':>5s} " + " ".join(f"{c:>14s}" for c in cols)
        lines = ["Errors on held-out geometries", head]
        for name, res in self.report.items():
            vals = " ".join(
                f"{res[c]:14.4f}" if c in res else f"{'-':>14s}" for c in cols
            )
            lines.append(f"{name:8s} {res.get('n_structures', 0):5d} {vals}")
        if self.units:
            lines.append(
                "units: " + ", ".join(f"{k} {v}" for k, v in self.units.items())
            )
        return "\n".join(lines)
