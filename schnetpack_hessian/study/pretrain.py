"""Models trained on every reaction of a set with a study's recipe, exported to ship.

:func:`pretrain` trains one arm of a plan (targets and Hessian mode of the preset,
PaiNN) on the critical points of *all* the set's reactions (a seeded 15 % of them
validate), scores the model on a stratified subsample of the IRC/NMS structures
(what a card's errors are measured on), exports it without pickle
(:func:`~schnetpack_hessian.pretrained.export_model`) and writes its model card.
Resumable: a finished training is not repeated.
"""

import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Sequence

from schnetpack_hessian.pretrained import export_model
from schnetpack_hessian.study.matrix import Arm, StudyPlan
from schnetpack_hessian.study.runner import (
    StudyContext,
    StudyData,
    training_finished,
)
from schnetpack_hessian.study.scoring import METRICS, score_run
from schnetpack_hessian.study.splits import RunSplit, make_split, write_split_file
from schnetpack_hessian.study.subsample import scored_subset

__all__ = ["PretrainResult", "pretrain", "model_card"]

#: Seed of the validation draw of a pretrained model.
PRETRAIN_SEED = 1
#: Structures (the first of the scored subsample) whose errors the model's JSON
#: records for a quick check that a loaded model is the one the card describes.
CHECK_STRUCTURES = 8


@dataclass(frozen=True)
class PretrainResult:
    """What :func:`pretrain` made: the exported model, its card and the numbers."""

    model: Path
    card: Path
    metrics: Dict[str, float]
    n_train: int
    n_val: int
    n_scored: int


def pretrain(
    plan: StudyPlan,
    arm: Arm,
    data: StudyData,
    data_label: str,
    name: str,
    work: Path,
    export_dir: Path,
    command: Sequence[str],
    threads: int = 1,
    device: str = "cpu",
) -> PretrainResult:
    """Train ``arm`` of ``plan`` on every reaction, score, export and write the card.

    Args:
        plan: the recipe (its budget; ``score_per_set`` sizes the scored subsample).
        arm: targets, model and Hessian mode (its seed and fold are not used).
        data: the training file, read once.
        data_label: how the card names the data.
        name: the model's name (``pretrained:NAME``).
        work: directory of the training run (``work/runs/NAME``).
        export_dir: where ``NAME.pt`` and ``NAME.md`` are written.
        command: the command line that made it (on the card).
    """
    work, export_dir = Path(work).resolve(), Path(export_dir)
    split = make_split(
        data.kinds, data.reactions, plan.n_folds, None, PRETRAIN_SEED, arm.fraction
    )
    run_dir = work / "runs" / name
    budget = plan.budget
    if not training_finished(run_dir, budget.max_epochs, budget.patience):
        split_file = write_split_file(
            split,
            [],
            work / "splits" / f"{name}.npz",
            data.path,
            len(data.structures),
        )
        context = StudyContext(plan, data, work, threads, device)
        context.train(context.spktrain_args(arm, split_file, run_id=name), name)
    scored = scored_subset(
        split.train_offpath, data.kinds, data.reactions, budget.score_per_set, 0
    )
    model = export_model(
        run_dir,
        export_dir / f"{name}.pt",
        {"name": name, "data": data_label, "arm": asdict(arm), "command": command},
    )
    metrics = score_run(
        model, {"irc_nms": data.subset(scored)}, ts_settings=None, device=device
    )["irc_nms"]
    card = export_dir / f"{name}.md"
    card.write_text(
        model_card(name, arm, plan, data_label, split, len(scored), metrics, command)
    )
    # a few structures whose errors a test reproduces by name in seconds
    check = [int(i) for i in scored[:CHECK_STRUCTURES]]
    check_metrics = score_run(
        model, {"check": data.subset(check)}, ts_settings=None, device=device
    )["check"]
    facts = {
        "data_file": Path(data.path).name,
        "metrics": metrics,
        "scored": [int(i) for i in scored],
        "check": {"structures": check, "metrics": check_metrics},
    }
    (export_dir / f"{name}.json").write_text(json.dumps(facts, indent=1))
    return PretrainResult(
        model, card, metrics, len(split.train), len(split.val), len(scored)
    )


def model_card(
    name: str,
    arm: Arm,
    plan: StudyPlan,
    data_label: str,
    split: RunSplit,
    n_scored: int,
    metrics: Dict[str, float],
    command: Sequence[str],
) -> str:
    """The Markdown model card of a pretrained model."""
    targets = {"EF": "energies and forces", "EFH": "energies, forces and Hessians"}
    hessian = "" if arm.hessian == "none" else f" (Hessian term: {arm.hessian})"
    b = plan.budget
    rows = [
        f"| {METRICS[k][0]} | {metrics[k]:.3g} {METRICS[k][1]} |"
        for k in ("energy_mae", "forces_mae", "hessian_mae", "frequency_mae")
        if k in metrics
    ]
    return "\n".join(
        [
            f"# Model card: `pretrained:{name}`",
            "",
            f"{arm.model} trained on {targets.get(arm.targets, arm.targets)}"
            f"{hessian} of the critical points (reactants, products, transition "
            f"states) of every reaction of the {data_label}.",
            "",
            "- **Intended use**: method development and testing at the GFN2-xTB "
            "level (TS searches, frequencies, IRC profiles of small H/C/N/O "
            "reactions); **not** a replacement for DFT, and not tested outside "
            "the elements and sizes of its data.",
            "- **Units**: energies in eV, forces in eV/Å and Hessians in eV/Å² "
            "through `HessianCalculator` (ASE units); the model itself works in "
            "kcal/mol and Å.",
            f"- **Data**: {len(split.train)} training and {len(split.val)} "
            "validation critical points (a seeded 15 % validate).",
            f"- **Recipe**: `experiment=study_recipe` with {b.n_atom_basis} features "
            f"× {b.n_interactions} interactions, batch {b.batch_size}, lr {b.lr:g}, "
            f"at most {b.max_epochs} epochs, early stopping patience {b.patience} "
            f"(`spkhess-study --preset {plan.name}`'s budget).",
            "- **Loads** without pickle (weights-only): "
            f'`HessianCalculator("pretrained:{name}", MatScipyNeighborList(5.0))`, '
            f"`spkhess-eval pretrained:{name} DATA`.",
            "",
            f"Measured errors on {n_scored} IRC/NMS structures of its training "
            "reactions (a stratified subsample; not trained on, but of the same "
            "reactions):",
            "",
            "| metric | value |",
            "| --- | --- |",
            *rows,
            "",
            "Made by:",
            "",
            "```",
            shlex.join(list(command)),
            "```",
            "",
        ]
    )
