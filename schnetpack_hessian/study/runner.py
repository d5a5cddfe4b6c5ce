"""Run a study's arms one at a time, resumably: train with spktrain, score, record.

Every arm trains in its own spktrain process (``OMP_NUM_THREADS`` = ``threads``; never
two at once: on a 2-core machine two multi-threaded trainings run 10-25× slower than
one) in ``DIR/runs/<arm>/``, is scored on its two test sets
(:mod:`~schnetpack_hessian.study.scoring`) and writes ``DIR/runs/<arm>/result.json``.
An arm with a ``result.json`` is never run again; an arm with a ``best_model`` but no
result is only scored if its training ended by the stopping rule
(:func:`training_finished`); an interrupted training resumes from spktrain's
``checkpoints/last.ckpt``.  So a killed study continues where it stopped.
"""

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import fasteners
import numpy as np
import torch

from schnetpack_hessian import properties as P
from schnetpack_hessian.data.io import atomic_output
from schnetpack_hessian.data.record import HessianRecord
from schnetpack_hessian.data.splitting import data_identity
from schnetpack_hessian.evaluation.data import read_structures
from schnetpack_hessian.evaluation.model import MODEL_FILE
from schnetpack_hessian.study.aggregate import learning_curve
from schnetpack_hessian.study.matrix import Arm, Budget, StudyPlan
from schnetpack_hessian.study.scoring import score_run
from schnetpack_hessian.study.splits import make_split, write_split_file
from schnetpack_hessian.study.subsample import scored_subset

__all__ = [
    "RESULT_FILE",
    "StudyError",
    "StudyData",
    "load_study_data",
    "StudyContext",
    "train_run",
    "run_arm",
    "training_finished",
    "run_study",
    "read_results",
]

RESULT_FILE = "result.json"
#: The budget a study directory was made with (finished runs are only valid for it).
BUDGET_FILE = "budget.json"


class StudyError(RuntimeError):
    """A study cannot run: missing data, a failed training (its log named)."""


@dataclass(frozen=True)
class StudyData:
    """The data set of a study, read once.

    Attributes:
        path: the training file.
        structures: every structure in file order, as records in ASE units.
        kinds: kind code per structure ``(n,)`` (index into ``properties.KINDS``).
        reactions: reaction id per structure ``(n,)``, -1 for none.
        reaction_names: id → name.
        atomrefs: the file has single-atom reference energies.
    """

    path: Path
    structures: Sequence[HessianRecord]
    kinds: np.ndarray
    reactions: np.ndarray
    reaction_names: Dict[int, str]
    atomrefs: bool

    def subset(self, indices: Sequence[int]) -> List[HessianRecord]:
        """The structures at ``indices``."""
        return [self.structures[i] for i in indices]


def load_study_data(path: Path) -> StudyData:
    """Read and check a training file (``spkhess-eval``'s reader and checks).

    Raises:
        StudyError: no such file, or no reaction labels to fold by.
    """
    path = Path(path).resolve()
    if not path.exists():
        raise StudyError(f"{path}: no such data file")
    data = read_structures([path])
    structures = data.records
    kinds = np.array([P.KINDS.index(r.kind) for r in structures])
    reactions = np.array([int(r.reaction) for r in structures])
    if (reactions < 0).all():
        raise StudyError(
            f"{path}: no structure has a 'reaction' label; the study folds by reaction"
        )
    atomrefs = bool(data.metadata.get("atomrefs"))
    return StudyData(path, structures, kinds, reactions, data.reaction_names, atomrefs)


@dataclass(frozen=True)
class StudyContext:
    """What every arm of a study shares: the plan, the data, the study directory and
    where the work runs.

    Attributes:
        plan: the arms and their budget.
        data: the data set, read once.
        out: the study directory (absolute).
        threads: ``OMP_NUM_THREADS`` of each training and of scoring.
        device: ``"cpu"`` or ``"cuda[:K]"``: where spktrain trains and scoring runs.
    """

    plan: StudyPlan
    data: StudyData
    out: Path
    threads: int = 1
    device: str = "cpu"

    def run_dir(self, run_id: str) -> Path:
        """``DIR/runs/<run_id>``."""
        return self.out / "runs" / run_id

    def spktrain_args(
        self, arm: Arm, split_file: Path, run_id: Optional[str] = None
    ) -> List[str]:
        """The spktrain command line of ``arm`` (after ``experiment=study_recipe``),
        run in ``DIR/runs/<run_id>`` (default: the arm's name)."""
        accelerator = ["trainer.accelerator=cpu"]
        if self.device.startswith("cuda"):
            # the GPU the study scores on (cuda:K): Lightning's devices=1 means GPU 0
            index = torch.device(self.device).index
            accelerator = ["trainer.accelerator=gpu", f"trainer.devices=[{index or 0}]"]
        return [
            "experiment=study_recipe",
            f"data.datapath={self.data.path}",
            f"data.split_file={split_file}",
            f"globals.atomrefs={self.data.atomrefs}",
            f"run.path={self.out / 'runs'}",
            f"run.id={run_id or arm.name}",
            *self.plan.budget.overrides(),
            *arm.overrides(),
            *self.teacher_args(arm),
            *accelerator,
        ]

    def teacher_args(self, arm: Arm) -> List[str]:
        """The teacher's run directory for a distilled arm (none for the others).

        Raises:
            StudyError: the teacher's training has not finished by its rule.
        """
        if arm.teacher is None:
            return []
        teacher_dir = self.run_dir(arm.teacher)
        budget = self.plan.budget
        if not training_finished(teacher_dir, budget.max_epochs, budget.patience):
            raise StudyError(
                f"{arm.name}: its teacher {arm.teacher} has not finished training "
                f"({teacher_dir}); the plan trains teachers first"
            )
        return [f"globals.teacher={teacher_dir}"]

    def train(self, args: List[str], run_id: str) -> None:
        """:func:`train_run` of ``args`` in ``DIR/runs/<run_id>``."""
        train_run(args, self.run_dir(run_id), self.out, self.threads)


def train_run(args: List[str], run_dir: Path, cwd: Path, threads: int) -> None:
    """Run spktrain with ``args`` (``OMP_NUM_THREADS=threads``, log appended to
    ``run_dir/spktrain.log``).

    spktrain runs in its own process group and holds ``run_dir/spktrain.lock``
    (an inherited ``flock``): SIGTERM or Ctrl-C to the study stops it (SIGTERM,
    SIGKILL after a grace period) before the study exits, and while a spktrain
    from an earlier, killed study still trains in ``run_dir``, no second one starts.

    Raises:
        StudyError: spktrain failed or wrote no ``best_model`` (the log's tail
            shown), or another spktrain holds ``run_dir``.
    """
    from schnetpack_hessian.files import OutputBusyError, exclusive_lock
    from schnetpack_hessian.processes import run_child

    run_dir.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("spktrain")
    # spktrain's config search path reads $PWD: point it at the study directory
    env = dict(
        os.environ, OMP_NUM_THREADS=str(threads), HYDRA_FULL_ERROR="1", PWD=str(cwd)
    )
    log_path = run_dir / "spktrain.log"
    lock_path = run_dir / "spktrain.lock"
    cpu0, wall0 = _children_cpu_seconds(), time.perf_counter()
    try:
        with (
            exclusive_lock(lock_path, str(run_dir), "is training in it") as lock,
            open(log_path, "a") as log,
        ):
            done = run_child(
                [str(exe), *args],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(lock,),
            )
    except OutputBusyError as err:
        raise StudyError(str(err)) from None
    _record_training_process(
        run_dir, _children_cpu_seconds() - cpu0, time.perf_counter() - wall0
    )
    if done.returncode != 0 or not (run_dir / MODEL_FILE).exists():
        tail = log_path.read_text()[-2000:]
        raise StudyError(
            f"spktrain failed for {run_dir.name} (exit {done.returncode}); "
            f"log {log_path}:\n{tail}"
        )


#: CPU and wall seconds of every spktrain process of a run (resumes append)
PROCESS_COST_FILE = "train_process.json"


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _record_training_process(run_dir: Path, cpu: float, wall: float) -> None:
    """Append one spktrain process's cost (start-up, training, validation, test)."""
    path = run_dir / PROCESS_COST_FILE
    segments = json.loads(path.read_text()) if path.exists() else []
    segments.append({"cpu_seconds": cpu, "wall_seconds": wall})
    path.write_text(json.dumps(segments, indent=1))


def _cost(
    run_dir: Path, curve: Optional[Tuple[np.ndarray, np.ndarray]] = None
) -> Dict[str, object]:
    """The run's cost record (``cost.json``, its processes, the learning curve's
    best epoch); ``curve``: the learning curve if already read."""
    path = run_dir / "cost.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    seconds = record.get("epoch_seconds") or []
    curve = learning_curve(run_dir) if curve is None else curve
    if curve is not None:
        best = int(curve[1].argmin())
        record.update(
            best_epoch=int(curve[0][best]), best_val_loss=float(curve[1][best])
        )
    # a resumed training's cost.json holds only its own epochs; the merged validation
    # curve counts them all
    n_epochs = int(curve[0][-1]) + 1 if curve is not None else len(seconds)
    processes = run_dir / PROCESS_COST_FILE
    if processes.exists():  # the whole training (validation too), over resumes
        segments = json.loads(processes.read_text())
        record["train_cpu_seconds"] = sum(x["cpu_seconds"] for x in segments)
        record["train_wall_seconds"] = sum(x["wall_seconds"] for x in segments)
    return dict(
        record,
        n_epochs=n_epochs,
        epoch_seconds_mean=float(np.mean(seconds)) if seconds else None,
        epoch_seconds_median=float(np.median(seconds)) if seconds else None,
    )


def training_finished(run_dir: Path, max_epochs: int, patience: int) -> bool:
    """Whether the training in ``run_dir`` ended by its own rule: a ``best_model``
    and a validation curve that ran ``max_epochs`` epochs or ``patience`` epochs past
    its best.  A training stopped from outside (SIGTERM, a killed study) also leaves a
    ``best_model`` (Lightning stops gracefully and spktrain stores it); that run is
    not finished and resumes from ``checkpoints/last.ckpt``.
    """
    if not (Path(run_dir) / MODEL_FILE).exists():
        return False
    return _ended_by_rule(learning_curve(run_dir), max_epochs, patience)


def _ended_by_rule(
    curve: Optional[Tuple[np.ndarray, np.ndarray]], max_epochs: int, patience: int
) -> bool:
    """Whether a validation curve ran ``max_epochs`` or ``patience`` epochs past its
    best."""
    if curve is None:
        return False
    epochs, losses = curve
    last, best = int(epochs[-1]), int(epochs[int(np.argmin(losses))])
    return last + 1 >= max_epochs or last - best >= patience


def run_arm(
    arm: Arm, context: StudyContext, score: bool = True
) -> Optional[Dict[str, object]]:
    """Train (unless a finished training exists, :func:`training_finished`), score
    and record one arm.

    Args:
        score: score the trained run and write its record; ``False`` only trains.

    Returns:
        The arm's record, as written to ``DIR/runs/<arm>/result.json`` (``None``
        when not scored).
    """
    plan, data, budget = context.plan, context.data, context.plan.budget
    run_dir = context.run_dir(arm.name)
    split = make_split(
        data.kinds,
        data.reactions,
        plan.n_folds,
        arm.fold,
        arm.seed,
        arm.fraction,
        val_per_reaction=budget.val_per_reaction,
    )
    t0 = time.perf_counter()
    curve = learning_curve(run_dir) if (run_dir / MODEL_FILE).exists() else None
    trained = not _ended_by_rule(curve, budget.max_epochs, budget.patience)
    if trained:
        split_file = write_split_file(
            split,
            split.heldout_critical(data.kinds),
            context.out / "splits" / f"{arm.name}.npz",
            data.path,
            len(data.structures),
        )
        context.train(context.spktrain_args(arm, split_file), arm.name)
        curve = learning_curve(run_dir)
        if not _ended_by_rule(curve, budget.max_epochs, budget.patience):
            raise StudyError(
                f"{run_dir.name}: spktrain ended before its stopping rule (max "
                f"{budget.max_epochs} epochs, patience {budget.patience}); was it "
                f"stopped from outside? Rerun to resume; log {run_dir / 'spktrain.log'}"
            )
    train_seconds = time.perf_counter() - t0
    if not score:
        return None
    t0, cpu0 = time.perf_counter(), time.process_time()
    test_sets = {"train_offpath": split.train_offpath, "heldout": split.heldout}
    if budget.score_per_set:
        test_sets = {
            name: scored_subset(
                indices, data.kinds, data.reactions, budget.score_per_set, arm.fold
            )
            for name, indices in test_sets.items()
        }
    metrics = score_run(
        run_dir,
        {name: data.subset(indices) for name, indices in test_sets.items()},
        ts_settings=plan.ts_settings if plan.ts_searched(arm) else None,
        device=context.device,
        reaction_names=data.reaction_names,
    )
    record = {
        "name": arm.name,
        "group": arm.group,
        "arm": asdict(arm),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_scored": {name: len(indices) for name, indices in test_sets.items()},
        "n_test": {
            "train_offpath": len(split.train_offpath),
            "heldout": len(split.heldout),
        },
        "heldout_reactions": split.heldout_reactions,
        "metrics": metrics,
        "cost": _cost(run_dir, curve),
        "train_seconds": train_seconds if trained else None,
        "eval_seconds": time.perf_counter() - t0,
        "eval_cpu_seconds": time.process_time() - cpu0,
    }
    with atomic_output(run_dir / RESULT_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return record


def check_budget(plan: StudyPlan, data: StudyData, out: Path) -> None:
    """Record the plan's budget and data in ``DIR/budget.json``, or check that they
    are the ones the directory was made with.

    Raises:
        StudyError: the directory holds runs of another budget or data set.
    """
    path = Path(out) / BUDGET_FILE
    identity = data_identity(data.path, len(data.structures))
    # the data by name and content, not by path: a clone elsewhere continues the runs
    wanted = {
        "budget": asdict(plan.budget),
        "data": {k: identity[k] for k in ("sha256", "n_structures")}
        | {"name": Path(data.path).name},
    }
    if path.exists():
        found = json.loads(path.read_text())
        if isinstance(found.get("data"), str):  # directories of earlier versions
            same = Path(found["data"]).name == Path(data.path).name
            found["data"] = wanted["data"] if same else found["data"]
        # a directory made before a budget field existed ran with its default; a
        # field since removed (ts_search: now the plan's) did not shape a training
        defaults = asdict(Budget())
        found["budget"] = {
            k: v
            for k, v in {**defaults, **found.get("budget", {})}.items()
            if k in defaults
        }
        if found != wanted:
            raise StudyError(
                f"{out} holds runs made with {found}, not {wanted}; finished runs are "
                "never retrained, so use a new output directory for a new budget"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=1))


def read_results(out: Path) -> List[Dict[str, object]]:
    """Every finished arm's record under ``DIR/runs``."""
    return [
        json.loads(p.read_text())
        for p in sorted(Path(out).glob(f"runs/*/{RESULT_FILE}"))
    ]


def run_study(
    plan: StudyPlan,
    data: StudyData,
    out: Path,
    threads: int = 1,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    max_runs: Optional[int] = None,
    score: bool = True,
) -> List[Dict[str, object]]:
    """Run every arm of ``plan`` that has no ``result.json`` yet, one at a time.

    Each arm is locked while it runs (``DIR/locks/<arm>.lock``): several processes may
    work on one study directory (one thread each on a small machine, one GPU each on a
    node), and an arm another process holds is skipped, not trained twice.

    Raises:
        StudyError: ``out`` holds runs of another budget (:func:`check_budget`), or a
            training failed.

    Args:
        max_runs: stop after training this many new arms (``None``: all).
        score: score each trained arm; ``False`` only trains (a later call with
            ``score=True`` scores the finished trainings without retraining).

    Returns:
        The records of all finished arms of the plan.
    """
    out = Path(out).resolve()
    check_budget(plan, data, out)
    context = StudyContext(plan, data, out, threads, device)
    done, trained = [], 0
    for i, arm in enumerate(plan.arms, 1):
        result = out / "runs" / arm.name / RESULT_FILE
        if result.exists():
            done.append(json.loads(result.read_text()))
            continue
        if max_runs is not None and trained >= max_runs:
            break
        lock_path = out / "locks" / f"{arm.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = fasteners.InterProcessLock(str(lock_path))
        if not lock.acquire(blocking=False):
            log(f"[{i}/{len(plan.arms)}] {arm.name}: running in another process")
            continue
        try:
            if result.exists():  # finished by another process meanwhile
                done.append(json.loads(result.read_text()))
                continue
            record = run_arm(arm, context, score)
        finally:
            lock.release()
        trained += 1
        if record is None:
            log(f"[{i}/{len(plan.arms)}] {arm.name}: trained (not scored)")
            continue
        done.append(record)
        seconds = record["train_seconds"]
        trained_in = (
            "trained before" if seconds is None else f"trained in {seconds:.0f} s"
        )
        log(
            f"[{i}/{len(plan.arms)}] {arm.name}: {trained_in}, "
            f"scored in {record['eval_seconds']:.0f} s"
        )
    return done
