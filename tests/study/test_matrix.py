"""The study's matrix, folds and splits, and the goals' verdicts."""

from dataclasses import replace

import numpy as np
import pytest

from schnetpack_hessian import properties as P
from schnetpack_hessian.study.aggregate import stat, summarize
from schnetpack_hessian.study.goals import check_goals
from schnetpack_hessian.study.matrix import Arm, full_plan, quick_plan
from schnetpack_hessian.study.splits import make_split, reaction_folds


def test_full_matrix_covers_the_issue():
    plan = full_plan()
    groups = {a.group for a in plan.arms}
    for model in ("painn", "schnet"):
        for targets, mode in [("E", "none"), ("EF", "none"), ("EH", "full")]:
            assert Arm(targets, model, mode).group in groups
        for mode in ("full", "hvp-k1", "hvp-k2", "rows-k2"):
            assert Arm("EFH", model, mode).group in groups
        for fraction in (0.125, 0.25, 0.5, 1.0):
            assert Arm("EF", model, "none", fraction).group in groups
            assert Arm("EFH", model, "full", fraction).group in groups
    assert len({a.name for a in plan.arms}) == len(plan.arms) == len(groups) * 15


def test_full_plan_with_replicates_tests_every_reaction_once_main_arms_first():
    plan = full_plan(replicates=3)
    assert plan.n_folds == 3 and len(plan.arms) == len(full_plan().arms) // 5
    for group in {a.group for a in plan.arms}:
        runs = [a for a in plan.arms if a.group == group]
        assert [(a.seed, a.fold) for a in runs] == [(1, 0), (2, 1), (3, 2)]
    first = [a.group for a in plan.arms[:6:3]]
    assert first == ["EF-painn-100pct", "EFH-full-painn-100pct"]
    with pytest.raises(ValueError, match="replicates"):
        full_plan(replicates=1)


def test_quick_plan_tests_every_reaction_once():
    plan = quick_plan()
    assert {a.model for a in plan.arms} == {"painn"}
    for group in {a.group for a in plan.arms}:
        runs = [a for a in plan.arms if a.group == group]
        assert sorted(a.seed for a in runs) == [1, 2, 3]
        assert sorted(a.fold for a in runs) == list(range(plan.n_folds))


def test_arm_checks_and_overrides():
    with pytest.raises(ValueError, match="mode"):
        Arm("EF", hessian="full")
    with pytest.raises(ValueError, match="mode"):
        Arm("EFH", hessian="none")
    overrides = Arm("EF", "schnet", "none", seed=4).overrides()
    assert "model/representation=schnet_smooth" in overrides
    assert "globals.hessian_weight=0.0" in overrides and "seed=4" in overrides
    plan = full_plan()
    searched = {a.group for a in plan.arms if plan.ts_searched(a)}
    assert searched == {
        f"{t}-{m}-100pct" for t in ("EF", "EFH-full") for m in ("painn", "schnet")
    }
    rows = Arm("EFH", hessian="rows-k2").overrides()
    assert "globals.probe=rows" in rows and "globals.n_probes=2" in rows


def _labels():
    """8 reactions × (reactant, product, ts, 2 irc, 2 nms) and two unlabelled."""
    kinds, reactions = [], []
    for r in range(8):
        for kind in ("reactant", "product", "ts", "irc", "irc", "nms", "nms"):
            kinds.append(P.KINDS.index(kind))
            reactions.append(r)
    kinds += [P.KINDS.index("other")] * 2
    reactions += [-1, -1]
    return np.array(kinds), np.array(reactions)


def test_folds_partition_the_reactions():
    _, reactions = _labels()
    folds = reaction_folds(reactions, 3)
    together = np.concatenate(folds)
    assert sorted(together.tolist()) == list(range(8))
    assert [len(f) for f in folds] == [3, 3, 2]
    with pytest.raises(ValueError, match="folds"):
        reaction_folds(reactions, 9)


def test_split_protocol():
    kinds, reactions = _labels()
    critical = [P.KINDS.index(k) for k in P.CRITICAL_KINDS]
    tested = []
    for fold in range(4):
        s = make_split(kinds, reactions, 4, fold, seed=1)
        held = set(s.heldout_reactions)
        tested += s.heldout_reactions
        for idx in (s.train, s.val):
            assert all(kinds[i] in critical for i in idx)
            assert not held & set(reactions[idx].tolist())
        assert not set(s.train) & set(s.val) and len(s.val) >= 1
        assert all(kinds[i] not in critical for i in s.train_offpath)
        assert not held & set(reactions[s.train_offpath].tolist())
        assert set(reactions[s.heldout].tolist()) == held
        assert len(s.heldout) == 7 * len(held)
        assert -1 not in reactions[s.train + s.val + s.heldout]
    assert sorted(tested) == list(range(8))


def test_fractions_are_nested_and_validation_is_fixed():
    kinds, reactions = _labels()
    splits = [make_split(kinds, reactions, 2, 0, 3, f) for f in (0.25, 0.5, 1.0)]
    assert len({tuple(s.val) for s in splits}) == 1
    assert set(splits[0].train) < set(splits[1].train) < set(splits[2].train)
    assert len(splits[0].train) == 3  # ceil(0.25 · (12 critical points − 2 val))


def test_validation_capped_per_reaction():
    """With val_per_reaction=1 no training reaction gives two critical points to
    validation; the split is otherwise the same protocol, nested and fixed."""
    from collections import Counter

    kinds = np.array([P.KINDS.index(k) for k in ("reactant", "product", "ts")] * 20)
    reactions = np.repeat(np.arange(20), 3)
    uncapped = [
        make_split(kinds, reactions, 2, 0, s, val_fraction=0.5) for s in range(5)
    ]
    # at 50 % validation an uncapped draw gives some reaction 2-3 points
    assert any(max(Counter(reactions[s.val]).values()) > 1 for s in uncapped)
    for seed in range(5):
        splits = [
            make_split(kinds, reactions, 2, 0, seed, f, 0.3, val_per_reaction=1)
            for f in (0.5, 1.0)
        ]
        capped = splits[1]
        assert max(Counter(reactions[capped.val]).values()) == 1
        assert len(capped.val) == 9  # round(0.3 · 30)
        assert not set(capped.val) & set(capped.train)
        assert len(capped.val) + len(capped.train) == 30
        assert splits[0].val == capped.val and set(splits[0].train) < set(capped.train)
    with pytest.raises(ValueError, match="too few training reactions"):
        make_split(kinds, reactions, 2, 0, 1, val_fraction=0.5, val_per_reaction=1)


def _record(group_arm, seed, metrics, epoch_s=1.0, heldout=None):
    return {
        "name": f"{group_arm.group}-s{seed}",
        "group": group_arm.group,
        "arm": dict(vars(group_arm)),
        "metrics": {"train_offpath": metrics, "heldout": heldout or {}},
        "cost": {"epoch_seconds_median": epoch_s, "n_epochs": 10},
    }


def test_stat_and_goal_verdicts():
    assert str(stat([1.0, 3.0])) == "2.00 ± 1.41"
    assert stat([float("nan")]).n == 0
    ef, full = Arm("EF", hessian="none"), Arm("EFH", hessian="full")
    hvp = Arm("EFH", hessian="hvp-k2")

    def errors(h, f, e):
        return {"hessian_mae": h, "forces_mae": f, "energy_mae": e}

    records = [
        *(_record(ef, s, errors(100.0, 10.0, 5.0)) for s in (1, 2)),
        *(_record(full, s, errors(20.0, 8.0, 3.0), 9.0) for s in (1, 2)),
        *(_record(hvp, s, errors(25.0, 8.0, 3.0), 2.0) for s in (1, 2)),
    ]
    goals = {g.text: g for g in check_goals(summarize(records), "painn")}
    assert goals["Hessian MAE −70 %"].status == "met"  # −80 %
    assert goals["force MAE −40 %"].status == "missed"  # −20 %
    assert goals["energy MAE −20 %"].status == "met"  # −40 %
    hvp_goal = next(g for t, g in goals.items() if t.startswith("HVP"))
    assert hvp_goal.status == "met" and "93.8%" in hvp_goal.evidence  # 75/80, 2×
    data_goal = next(g for t, g in goals.items() if "25 %" in t)
    assert data_goal.status == "not measured"
    assert check_goals(summarize(records[:2]), "painn")[0].status == "not measured"


def test_an_arm_locked_by_another_process_is_skipped(tmp_path):
    """Two processes on one study directory never train the same arm."""
    import multiprocessing

    import fasteners

    from schnetpack_hessian.datasets import reactive_set_path
    from schnetpack_hessian.study.runner import load_study_data, run_study

    plan = quick_plan(replicates=2).select(["EF-painn-100pct"])
    data = load_study_data(reactive_set_path())
    locks = []
    for arm in plan.arms:
        path = tmp_path / "locks" / f"{arm.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        locks.append(path)
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.get_context("fork").Process(
        target=_hold_locks, args=(locks, ready, release)
    )
    holder.start()
    try:
        assert ready.wait(30)
        messages = []
        assert run_study(plan, data, tmp_path, log=messages.append) == []
        assert messages == [
            f"[{i}/2] {arm.name}: running in another process"
            for i, arm in enumerate(plan.arms, 1)
        ]
        assert not any((tmp_path / "runs" / a.name).exists() for a in plan.arms)
    finally:
        release.set()
        holder.join(30)
    assert fasteners.InterProcessLock(str(locks[0])).acquire(blocking=False)


def _hold_locks(paths, ready, release):
    import fasteners

    held = [fasteners.InterProcessLock(str(p)) for p in paths]
    for lock in held:
        lock.acquire()
    ready.set()
    release.wait(60)


def _fake_run(run_dir, curves):
    """A run directory with a best_model and one CSV log per curve (val_loss per
    epoch, a resumed training's later versions holding later epochs)."""
    run_dir.mkdir(parents=True)
    (run_dir / "best_model").write_bytes(b"")
    for version, curve in enumerate(curves):
        path = run_dir / "csv" / f"version_{version}" / "metrics.csv"
        path.parent.mkdir(parents=True)
        rows = ["epoch,step,val_loss,train_loss"]
        for epoch, loss in curve:
            rows += [f"{epoch},{epoch},,1.0", f"{epoch},{epoch},{loss},"]
        path.write_text("\n".join(rows) + "\n")


def test_training_finished_follows_the_stopping_rule(tmp_path):
    from schnetpack_hessian.study.aggregate import learning_curve
    from schnetpack_hessian.study.runner import training_finished

    def curve(n, best):
        return [(e, 1.0 if e == best else 2.0 + e) for e in range(n)]

    _fake_run(tmp_path / "early", [curve(15, 4)])  # 10 epochs past its best
    _fake_run(tmp_path / "cut", [curve(12, 4)])  # stopped from outside
    _fake_run(tmp_path / "max", [curve(20, 18)])  # ran its epochs
    full = curve(15, 4)
    _fake_run(tmp_path / "resumed", [full[:8], full[7:]])
    assert training_finished(tmp_path / "early", max_epochs=20, patience=10)
    assert not training_finished(tmp_path / "cut", max_epochs=20, patience=10)
    assert training_finished(tmp_path / "max", max_epochs=20, patience=10)
    assert training_finished(tmp_path / "resumed", max_epochs=20, patience=10)
    epochs, losses = learning_curve(tmp_path / "resumed")
    assert epochs.tolist() == list(range(15)) and losses[4] == 1.0
    assert not training_finished(tmp_path / "missing", max_epochs=20, patience=10)


def test_budget_regularisation_knobs_reach_spktrain_and_old_directories_resume(
    tmp_path,
):
    """Weight decay and gradient clipping are budget fields (spktrain overrides); a
    study directory recorded before they existed resumes with their defaults, and
    one recorded with other values is refused."""
    import json
    from dataclasses import asdict

    from schnetpack_hessian.datasets import reactive_set_path
    from schnetpack_hessian.study.matrix import Budget
    from schnetpack_hessian.study.runner import (
        BUDGET_FILE,
        StudyError,
        check_budget,
        load_study_data,
    )

    overrides = Budget(weight_decay=0.05, gradient_clip=5.0).overrides()
    assert "task.optimizer_args.weight_decay=0.05" in overrides
    assert "trainer.gradient_clip_val=5.0" in overrides
    assert Budget().overrides() == []  # the recipe itself: nothing to override

    data = load_study_data(reactive_set_path())
    plan = quick_plan()
    old = asdict(plan.budget)
    del old["weight_decay"], old["gradient_clip"]
    (tmp_path / BUDGET_FILE).write_text(
        json.dumps({"budget": old, "data": str(data.path)})
    )
    check_budget(plan, data, tmp_path)  # the defaults: same budget
    with pytest.raises(StudyError, match="new output directory"):
        check_budget(plan.with_budget(weight_decay=0.1), data, tmp_path)


def test_study_directory_knows_its_data_by_content_not_path(tmp_path):
    """A study directory moved with a clone (the data file at another path) keeps its
    runs; other data with the same name is refused."""
    import shutil

    from schnetpack_hessian.datasets import reactive_set_path
    from schnetpack_hessian.study.runner import StudyError, check_budget
    from schnetpack_hessian.study.runner import load_study_data

    plan = quick_plan()
    data = load_study_data(reactive_set_path())
    check_budget(plan, data, tmp_path / "study")
    elsewhere = tmp_path / "clone" / data.path.name
    elsewhere.parent.mkdir()
    shutil.copy(data.path, elsewhere)
    check_budget(plan, load_study_data(elsewhere), tmp_path / "study")
    other = tmp_path / "other" / data.path.name
    other.parent.mkdir()
    shutil.copy(data.path, other)
    with open(other, "ab") as f:
        f.write(b"\0")  # same name and structures, other content
    moved = replace(load_study_data(elsewhere), path=other)
    with pytest.raises(StudyError, match="new output directory"):
        check_budget(plan, moved, tmp_path / "study")


def test_data_efficiency_figure_draws_only_arms_run_at_several_fractions(tmp_path):
    from schnetpack_hessian.study import figures

    errors = {"hessian_mae": 50.0, "forces_mae": 10.0, "energy_mae": 5.0}
    ef = Arm("EF", hessian="none")
    single = [_record(ef, 1, errors), _record(Arm("EFH", hessian="hvp-k2"), 1, errors)]
    assert figures.data_efficiency(summarize(single), tmp_path) == []
    curve = single + [_record(Arm("EF", hessian="none", fraction=0.25), 1, errors)]
    drawn = figures.data_efficiency(summarize(curve), tmp_path)
    assert drawn == ["data_efficiency.png"]
    assert (tmp_path / "data_efficiency.png").stat().st_size > 1000


def test_cpu_preset_is_the_bulk_contrast_with_one_full_hessian_subset():
    from schnetpack_hessian.study.matrix import CPU_HESSIAN, cpu_plan

    plan = cpu_plan()
    assert plan.n_folds == 3 and plan.budget.score_per_set > 0
    groups = [a.group for a in plan.arms]
    for model in ("painn", "schnet"):
        for fraction in (1.0, 0.25):
            for arm in (
                Arm("EF", model, "none", fraction),
                Arm("EFH", model, CPU_HESSIAN, fraction),
            ):
                runs = [a for a in plan.arms if a.group == arm.group]
                assert [(a.seed, a.fold) for a in runs] == [(1, 0), (2, 1), (3, 2)]
    full = [a for a in plan.arms if a.hessian == "full"]
    assert [(a.model, a.fraction, a.fold) for a in full] == [("painn", 0.25, 0)]
    assert groups[:6:3] == ["EF-painn-100pct", f"EFH-{CPU_HESSIAN}-painn-100pct"]
    searched = {a.group for a in plan.arms if plan.ts_searched(a)}
    assert searched == {
        f"{g}-{m}-{f}pct"
        for m in ("painn", "schnet")
        for g, f in [
            ("EF", 100),
            (f"EFH-{CPU_HESSIAN}", 100),
            (f"EFH-{CPU_HESSIAN}", 25),
        ]
    } | {f"EFH-{CPU_HESSIAN}-distilled-painn-100pct"}
    assert not any(replace(plan, ts_settings=None).ts_searched(a) for a in plan.arms)
    # last, one student per fold distilled from that fold's E+F+H PaiNN (same split)
    distilled = [a for a in plan.arms if a.teacher is not None]
    assert plan.arms[-3:] == tuple(distilled)
    names = [a.name for a in plan.arms]
    for student in distilled:
        teacher = next(a for a in plan.arms if a.name == student.teacher)
        assert replace(student, teacher=None) == teacher
        assert names.index(teacher.name) < names.index(student.name)
        assert "+distill=teacher" in student.overrides()
    with pytest.raises(ValueError, match="replicates"):
        cpu_plan(1)


def test_scored_subset_keeps_critical_points_and_is_stratified_and_paired():
    from schnetpack_hessian.study.subsample import scored_subset

    kinds_named = ["reactant", "product", "ts"] + ["irc"] * 30 + ["nms"] * 10
    kinds = np.array([P.KINDS.index(k) for k in kinds_named] * 4)
    reactions = np.repeat(np.arange(4), len(kinds_named))
    indices = np.arange(len(kinds))
    picked = scored_subset(indices, kinds, reactions, 40, fold=1)
    assert len(picked) == 12 + 40 and picked == sorted(set(picked))
    critical = [i for i in indices if P.KINDS[kinds[i]] in P.CRITICAL_KINDS]
    assert set(critical) <= set(picked)
    for r in range(4):  # 40 others drawn from 160: 7.5 irc and 2.5 nms per reaction
        mine = [i for i in picked if reactions[i] == r and i not in critical]
        irc = sum(P.KINDS[kinds[i]] == "irc" for i in mine)
        assert irc in (7, 8) and len(mine) - irc in (2, 3)
    assert scored_subset(indices, kinds, reactions, 40, fold=1) == picked
    assert scored_subset(indices, kinds, reactions, 40, fold=2) != picked
    assert scored_subset(indices, kinds, reactions, 0, fold=1) == indices.tolist()
    assert scored_subset(indices[:20], kinds, reactions, 40, 0) == list(range(20))


def test_goals_of_a_preset_judge_its_hessian_arm_and_the_endpoint_searches():
    ef, hvp = Arm("EF", hessian="none"), Arm("EFH", hessian="hvp-k2")
    hvp25 = Arm("EFH", hessian="hvp-k2", fraction=0.25)

    def errors(h, f, e, freq, index):
        return {
            "hessian_mae": h,
            "forces_mae": f,
            "energy_mae": e,
            "frequency_mae": freq,
            "imaginary_count_accuracy": index,
        }

    def searches(success, steps):
        return {
            "ts_success_endpoints_model_hessian": success,
            "ts_steps_endpoints_model_hessian": steps,
        }

    records = [
        *(
            _record(ef, s, errors(100, 10, 5, 1000, 0.3), heldout=searches(0.2, 30))
            for s in (1, 2)
        ),
        *(
            _record(hvp, s, errors(20, 8, 3, 300, 0.9), heldout=searches(0.5, 12))
            for s in (1, 2)
        ),
        *(
            _record(hvp25, s, errors(60, 9, 4, 900, 0.5), heldout=searches(0.1, 20))
            for s in (1, 2)
        ),
    ]
    summary = summarize(records)
    assert check_goals(summary, "painn")[0].status == "not measured"  # no full arm
    goals = {g.text: g for g in check_goals(summary, "painn", "hvp-k2")}
    assert goals["frequency MAE −60 %"].status == "met"  # −70 %
    index = next(g for t, g in goals.items() if t.startswith("imaginary-mode"))
    assert index.status == "met"
    endpoint = next(g for t, g in goals.items() if t.startswith("TS success from"))
    assert endpoint.status == "met"  # 0.5 ≥ 2 × 0.2, 12 < 30 steps
    data_goal = next(g for t, g in goals.items() if "25 %" in t)
    assert data_goal.status == "missed"  # 0.1 < 0.2 TS success, worse Hessians
    assert "ts_success_endpoints_model_hessian" in data_goal.evidence
    assert not any(t.startswith("HVP") for t in goals)
    # an E+F arm without a successful search has no steps: said, not "None"
    for record in records[:2]:
        del record["metrics"]["heldout"]["ts_steps_endpoints_model_hessian"]
        record["metrics"]["heldout"]["ts_success_endpoints_model_hessian"] = 0.0
    goals = {g.text: g for g in check_goals(summarize(records), "painn", "hvp-k2")}
    endpoint = next(g for t, g in goals.items() if t.startswith("TS success from"))
    assert endpoint.status == "met"
    assert "median steps E+F – (no successful search)" in endpoint.evidence
    assert "None" not in endpoint.evidence
