"""The study's matrix: which runs make up a comparison, and how each is configured.

An :class:`Arm` is one training run: targets (``E``, ``EF``, ``EH``, ``EFH``), model
(``painn``, ``schnet``), how the Hessian term is computed in training (``full``,
``hvp-k1``, ``hvp-k2``, ``rows-k2``), the fraction of the training critical points,
the seed and the by-reaction fold it is tested on.  Its :attr:`Arm.group` (everything
but seed and fold) is what the report averages over.  A :class:`Budget` is the fair
recipe's budget and stopping rule, the same for every arm of a study.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from schnetpack_hessian.evaluation.tssearch import TSSearchSettings
from schnetpack_hessian.study.scoring import ENDPOINT_TS_SETTINGS, TS_SETTINGS

__all__ = [
    "TARGETS",
    "HESSIAN_MODES",
    "MODELS",
    "FRACTIONS",
    "Arm",
    "Budget",
    "StudyPlan",
    "quick_plan",
    "full_plan",
    "cpu_plan",
    "PRESETS",
]

TARGETS = ("E", "EF", "EH", "EFH")
MODELS = {"painn": "painn_smooth", "schnet": "schnet_smooth"}
FRACTIONS = (0.125, 0.25, 0.5, 1.0)

#: Hessian mode of an arm → spktrain overrides of the Hessian module.
HESSIAN_MODES: Dict[str, List[str]] = {
    "none": [],
    "full": ["globals.hessian_mode=full"],
    "hvp-k1": [
        "globals.hessian_mode=hvp",
        "globals.probe=gaussian",
        "globals.n_probes=1",
    ],
    "hvp-k2": [
        "globals.hessian_mode=hvp",
        "globals.probe=gaussian",
        "globals.n_probes=2",
    ],
    "rows-k2": ["globals.hessian_mode=hvp", "globals.probe=rows", "globals.n_probes=2"],
}

#: Targets → the loss terms they switch off (weights of the loss preset otherwise).
_TARGET_OVERRIDES: Dict[str, List[str]] = {
    "E": [
        "globals.hessian_in_training=False",
        "globals.forces_weight=0.0",
        "globals.hessian_weight=0.0",
    ],
    "EF": ["globals.hessian_in_training=False", "globals.hessian_weight=0.0"],
    "EH": ["globals.forces_weight=0.0"],
    "EFH": [],
}


@dataclass(frozen=True)
class Arm:
    """One training run of the study.

    Attributes:
        targets: ``E``, ``EF``, ``EH`` or ``EFH``.
        model: ``painn`` or ``schnet``.
        hessian: Hessian mode in training (``none`` for ``E``/``EF``).
        fraction: fraction of the training critical points used.
        seed: training seed (also draws the validation points and the subset).
        fold: the by-reaction fold whose reactions are held out.
        teacher: name of another arm of the study whose trained model labels this
            arm's Hessians (distillation, ``+distill=teacher``: the teacher's exact
            products along the arm's probes; the data's Hessians are not read).
            None: the data's Hessians.
    """

    targets: str
    model: str = "painn"
    hessian: str = "full"
    fraction: float = 1.0
    seed: int = 1
    fold: int = 0
    teacher: Optional[str] = None

    def __post_init__(self):
        if self.targets not in TARGETS:
            raise ValueError(f"Arm: targets {self.targets!r} not in {TARGETS}")
        if self.model not in MODELS:
            raise ValueError(f"Arm: model {self.model!r} not in {sorted(MODELS)}")
        if self.hessian not in HESSIAN_MODES:
            raise ValueError(
                f"Arm: hessian {self.hessian!r} not in {list(HESSIAN_MODES)}"
            )
        if ("H" in self.targets) == (self.hessian == "none"):
            raise ValueError(
                f"Arm: targets {self.targets} with hessian mode {self.hessian!r}; "
                "Hessian targets need a mode other than 'none', the others 'none'"
            )
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"Arm: fraction {self.fraction} not in (0, 1]")
        if self.teacher is not None and not self.hessian.startswith("hvp"):
            raise ValueError(
                f"Arm: a teacher labels Hessian-vector products; hessian mode "
                f"{self.hessian!r} is not an HVP mode"
            )

    @property
    def group(self) -> str:
        """Name of the arm without seed and fold (what the report averages over)."""
        mode = "" if self.hessian == "none" else f"-{self.hessian}"
        distilled = "" if self.teacher is None else "-distilled"
        return (
            f"{self.targets}{mode}{distilled}-{self.model}-{self.fraction * 100:g}pct"
        )

    @property
    def name(self) -> str:
        """Unique run name (the run's directory under ``DIR/runs``)."""
        return f"{self.group}-s{self.seed}-k{self.fold}"

    def overrides(self) -> List[str]:
        """spktrain overrides of this arm (targets, model, Hessian mode, seed; a
        teacher's run directory is added by the study, which knows where it is)."""
        return [
            f"model/representation={MODELS[self.model]}",
            *_TARGET_OVERRIDES[self.targets],
            *HESSIAN_MODES[self.hessian],
            *(["+distill=teacher"] if self.teacher is not None else []),
            f"seed={self.seed}",
        ]


#: Budget field → the spktrain config key it sets in ``experiment=study_recipe``
RECIPE_KEYS: Dict[str, str] = {
    "max_epochs": "trainer.max_epochs",
    "patience": "callbacks.early_stopping.patience",
    "lr_patience": "task.scheduler_args.patience",
    "warmup_steps": "task.warmup_steps",
    "n_atom_basis": "model.representation.n_atom_basis",
    "n_interactions": "model.representation.n_interactions",
    "batch_size": "data.batch_size",
    "lr": "globals.lr",
    "weight_decay": "task.optimizer_args.weight_decay",
    "gradient_clip": "trainer.gradient_clip_val",
}


def recipe_values() -> Dict[str, object]:
    """The recipe's values of the :class:`Budget` fields, read from
    ``configs/experiment/study_recipe.yaml`` (the one source of the recipe); ``loss``
    is its ``override /loss`` default."""
    from omegaconf import OmegaConf

    path = Path(__file__).parents[1] / "configs" / "experiment" / "study_recipe.yaml"
    config = OmegaConf.load(path)
    values: Dict[str, object] = {}
    for name, key in RECIPE_KEYS.items():
        value = OmegaConf.select(config, key)
        if value is None:
            raise ValueError(f"{path}: the recipe does not set {key} (Budget.{name})")
        values[name] = value
    for entry in config.defaults:
        if isinstance(entry, Mapping) and "override /loss" in entry:
            values["loss"] = entry["override /loss"]
    if "loss" not in values:
        raise ValueError(f"{path}: the recipe does not choose a loss preset")
    return values


_RECIPE = recipe_values()


@dataclass(frozen=True)
class Budget:
    """The fair recipe's budget and stopping rule, the same for every arm.

    The training fields default to ``experiment=study_recipe``'s values
    (:func:`recipe_values`: the YAML file is their one source) and reach spktrain as
    overrides only where they differ from it (:meth:`overrides`).

    Attributes:
        max_epochs: most epochs.
        patience: early-stopping patience on ``val_loss``, epochs.
        lr_patience: ReduceLROnPlateau patience, epochs (factor 0.5).
        warmup_steps: linear learning-rate warm-up, optimiser steps.
        n_atom_basis: features per atom.
        n_interactions: message-passing layers.
        batch_size: training structures per batch.
        lr: initial learning rate.
        weight_decay: AdamW's decoupled weight decay (0: none).
        gradient_clip: clip the gradient norm to this value (0: no clipping).
        loss: loss preset (``configs/loss/``).
        val_per_reaction: at most this many critical points of one training
            reaction validate (0: no limit; :func:`~.splits.make_split`).
        score_per_set: score each run on every critical point of a test set and at
            most this many of its other structures, stratified by reaction and kind
            (0: every structure).
    """

    max_epochs: int = _RECIPE["max_epochs"]
    patience: int = _RECIPE["patience"]
    lr_patience: int = _RECIPE["lr_patience"]
    warmup_steps: int = _RECIPE["warmup_steps"]
    n_atom_basis: int = _RECIPE["n_atom_basis"]
    n_interactions: int = _RECIPE["n_interactions"]
    batch_size: int = _RECIPE["batch_size"]
    lr: float = _RECIPE["lr"]
    weight_decay: float = _RECIPE["weight_decay"]
    gradient_clip: float = _RECIPE["gradient_clip"]
    loss: str = _RECIPE["loss"]
    val_per_reaction: int = 0
    score_per_set: int = 0

    def overrides(self) -> List[str]:
        """spktrain overrides of the fields that differ from the recipe (on top of
        ``experiment=study_recipe``)."""
        out = [] if self.loss == _RECIPE["loss"] else [f"loss={self.loss}"]
        for name, key in RECIPE_KEYS.items():
            value = getattr(self, name)
            if value != _RECIPE[name]:
                out.append(f"{key}={value}")
        return out


@dataclass(frozen=True)
class StudyPlan:
    """A study: its arms, the number of by-reaction folds and the shared budget.

    Attributes:
        name: the plan's name (``quick``, ``full``, ``cpu``).
        arms: every run, in the order they are trained.
        n_folds: by-reaction folds.
        budget: the recipe shared by every arm.
        ts_hessian: the Hessian mode of the E+F+H arm whose TS searches are compared
            with E+F's (:meth:`ts_searched`).
        ts_fractions: the data fractions of that E+F+H arm that are searched too (E+F
            is searched at 100 % only).
        ts_settings: how the searches start, run and are judged; ``None``: no TS
            searches (the one switch of the TS-search policy is the plan's).
    """

    name: str
    arms: Tuple[Arm, ...]
    n_folds: int
    budget: Budget = field(default_factory=Budget)
    ts_hessian: str = "full"
    ts_fractions: Tuple[float, ...] = (1.0,)
    ts_settings: Optional[TSSearchSettings] = TS_SETTINGS

    def ts_searched(self, arm: Arm) -> bool:
        """Whether the study runs TS searches for ``arm`` (when the plan has them):
        the contrasts the goals name, E+F on all the training data against the plan's
        E+F+H arm at :attr:`ts_fractions` (a search costs minutes per run on a CPU;
        other arms skip it)."""
        if self.ts_settings is None:
            return False
        if (arm.targets, arm.hessian) == ("EF", "none"):
            return arm.fraction == 1.0
        return (arm.targets, arm.hessian) == ("EFH", self.ts_hessian) and (
            arm.fraction in self.ts_fractions
        )

    def __post_init__(self):
        bad = [a.name for a in self.arms if not 0 <= a.fold < self.n_folds]
        if bad:
            raise ValueError(f"StudyPlan: folds outside 0..{self.n_folds - 1}: {bad}")

    def select(self, groups: Sequence[str]) -> "StudyPlan":
        """The plan restricted to the arms of ``groups`` (:attr:`Arm.group` names).

        Raises:
            ValueError: a group the plan does not have.
        """
        known = {a.group for a in self.arms}
        unknown = sorted(set(groups) - known)
        if unknown:
            raise ValueError(f"StudyPlan: no arms {unknown}; known: {sorted(known)}")
        return replace(self, arms=tuple(a for a in self.arms if a.group in groups))

    def with_budget(self, **changes) -> "StudyPlan":
        """The same plan with some budget fields changed."""
        return replace(self, budget=replace(self.budget, **changes))


def _replicated(
    groups: Sequence[Arm], replicates: Sequence[Tuple[int, int]]
) -> Tuple[Arm, ...]:
    return tuple(
        replace(g, seed=seed, fold=fold) for g in groups for seed, fold in replicates
    )


def quick_plan(replicates: int = 3) -> StudyPlan:
    """PaiNN, the recipe's budget without TS searches: E+F vs E+F+H (full), plus E+F+H
    with HVP k=2 and E+F+H
    (full) on 25 % of the training points; ``replicates`` runs per arm, run ``r`` with
    seed ``r + 1`` tested on fold ``r`` of ``max(replicates, 2)`` by-reaction folds (3
    replicates: 3 seeds, every reaction tested once)."""
    n_folds = max(replicates, 2)
    groups = [
        Arm("EF", hessian="none"),
        Arm("EFH", hessian="full"),
        Arm("EFH", hessian="hvp-k2"),
        Arm("EFH", hessian="full", fraction=0.25),
    ]
    return StudyPlan(
        "quick",
        _replicated(groups, _paired(replicates)),
        n_folds,
        Budget(),
        ts_settings=None,
    )


def _paired(replicates: int) -> List[Tuple[int, int]]:
    """Run ``r`` of ``replicates``: seed ``r + 1`` tested on fold ``r``."""
    return [(r + 1, r) for r in range(replicates)]


def full_plan(
    seeds: Sequence[int] = (1, 2, 3),
    n_folds: int = 5,
    replicates: Optional[int] = None,
) -> StudyPlan:
    """The whole matrix: E, E+F, E+H, E+F+H (full, HVP k=1, 2, rows k=2) × PaiNN and
    SchNet; E+F and E+F+H (full) also at 12.5, 25 and 50 % of the training critical
    points.

    Every arm runs for each seed on each of ``n_folds`` by-reaction folds, or, with
    ``replicates``, as the quick plan does: run ``r`` with seed ``r + 1`` tested on fold
    ``r`` of ``replicates`` folds (every reaction tested once, one seed per fold).

    Arms are ordered by what the comparison needs first, so that a study stopped early
    has its main contrasts: E+F and E+F+H (full) at 100 %, then E and E+H, the cheaper
    Hessian modes, then the data fractions; each model in turn.
    """
    groups: List[Arm] = []
    for model in MODELS:
        groups += [
            Arm("EF", model, "none"),
            Arm("EFH", model, "full"),
            Arm("E", model, "none"),
            Arm("EH", model, "full"),
            *(Arm("EFH", model, mode) for mode in ("hvp-k2", "hvp-k1", "rows-k2")),
        ]
        for fraction in sorted(FRACTIONS[:-1], key=lambda f: abs(f - 0.25)):
            groups += [
                Arm("EF", model, "none", fraction),
                Arm("EFH", model, "full", fraction),
            ]
    if replicates is not None:
        if replicates < 2:
            raise ValueError(f"full_plan: replicates {replicates} < 2 (folds)")
        return StudyPlan("full", _replicated(groups, _paired(replicates)), replicates)
    pairs = [(s, k) for s in seeds for k in range(n_folds)]
    return StudyPlan("full", _replicated(groups, pairs), n_folds)


#: The E+F+H arm of the CPU preset: HVP with two Gaussian probes per structure, which
#: kept the full Hessian's gain on the shipped set at ~3× an E+F epoch on the bulk set
#: (the full Hessian: 27–34×; docs/RESULTS.md).
CPU_HESSIAN = "hvp-k2"

#: The CPU preset's recipe (chosen by epoch cost, docs/RESULTS.md "The CPU preset"):
#: study_recipe's model, loss and optimiser with larger batches, a shorter stopping
#: rule, and scoring on a stratified subsample of each test set.
CPU_BUDGET = Budget(
    max_epochs=200,
    patience=40,
    lr_patience=10,
    batch_size=16,
    score_per_set=300,
)


def cpu_plan(replicates: int = 3) -> StudyPlan:
    """The bulk study within a CPU budget (``spkhess-study --preset cpu``).

    E+F against E+F+H (:data:`CPU_HESSIAN`), PaiNN and SchNet, at 100 % and 25 % of
    the training critical points; run ``r`` with seed ``r + 1`` tested on fold ``r`` of
    ``replicates`` by-reaction folds (every reaction tested once).  The full Hessian
    runs on a subset only, PaiNN at 25 % on fold 0, to tie the HVP arm to it.  Last,
    PaiNN students distilled from the E+F+H PaiNN of their fold (the teacher's
    products as Hessian labels, same split, seed and budget).  The main contrast
    (100 %) comes first, then the data fractions, the full Hessian, distillation.

    Raises:
        ValueError: ``replicates`` < 2.
    """
    if replicates < 2:
        raise ValueError(f"cpu_plan: replicates {replicates} < 2 (folds)")
    main, fractions = [], []
    for model in MODELS:
        main += [Arm("EF", model, "none"), Arm("EFH", model, CPU_HESSIAN)]
        fractions += [
            Arm("EF", model, "none", 0.25),
            Arm("EFH", model, CPU_HESSIAN, 0.25),
        ]
    pairs = _paired(replicates)
    teachers = _replicated([Arm("EFH", "painn", CPU_HESSIAN)], pairs)
    distilled = tuple(replace(t, teacher=t.name) for t in teachers)
    arms = (
        _replicated(main, pairs)
        + _replicated(fractions, pairs)
        + (Arm("EFH", "painn", "full", 0.25, seed=1, fold=0),)
        + distilled
    )
    return StudyPlan(
        "cpu",
        arms,
        replicates,
        CPU_BUDGET,
        ts_hessian=CPU_HESSIAN,
        ts_fractions=(1.0, 0.25),
        ts_settings=ENDPOINT_TS_SETTINGS,
    )


#: Named plans of ``spkhess-study --preset``.
PRESETS = {"cpu": cpu_plan}
