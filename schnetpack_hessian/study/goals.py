"""The issue's goals, checked against a study's summary.

On the held-out IRC/NMS geometries of the training reactions (test set
``train_offpath``), E+F+H (full) against E+F, same budget: Hessian MAE −70 %, force
MAE −40 %, energy MAE −20 %; frequency MAE and TS-search success better; E+F+H at 25 %
of the training data at least as good as E+F at 100 % on Hessians and forces; HVP
(k ≤ 2) keeps ≥ 90 % of the full-Hessian gain in Hessian MAE at ≤ 2.5× the E+F epoch
time.  TS searches start from the reference TSs, so their goal is judged on the
held-out reactions (``heldout``).  A goal whose arms were not run is "not measured".
"""

from dataclasses import dataclass
from typing import Dict, List, Optional

from schnetpack_hessian.study.aggregate import GroupSummary, Stat
from schnetpack_hessian.study.matrix import Arm

__all__ = ["Goal", "GOAL_SET", "check_goals"]

#: The test set the goals are judged on.
GOAL_SET = "train_offpath"

MET, MISSED, NOT_MEASURED = "met", "missed", "not measured"


@dataclass(frozen=True)
class Goal:
    """One goal: what it asks, its status and the numbers behind it."""

    text: str
    status: str
    evidence: str


def _metric(
    s: Optional[GroupSummary], key: str, test_set: str = GOAL_SET
) -> Optional[Stat]:
    if s is None:
        return None
    value = s.metrics.get(test_set, {}).get(key)
    return value if value is not None and value.n > 0 else None


def _reduction_goal(
    text: str,
    key: str,
    ef: GroupSummary,
    efh: GroupSummary,
    target: float,
    test_set: str = GOAL_SET,
) -> Goal:
    a, b = _metric(ef, key, test_set), _metric(efh, key, test_set)
    if a is None or b is None:
        return Goal(text, NOT_MEASURED, f"no {key} for both arms")
    change = b.mean / a.mean - 1.0
    status = MET if change <= -target else MISSED
    return Goal(text, status, f"E+F {a}, E+F+H {b}: {change:+.0%}")


def _better_goal(
    text: str,
    key: str,
    ef: GroupSummary,
    efh: GroupSummary,
    higher: bool,
    test_set: str = GOAL_SET,
) -> Goal:
    a, b = _metric(ef, key, test_set), _metric(efh, key, test_set)
    if a is None or b is None:
        return Goal(text, NOT_MEASURED, f"no {key} for both arms")
    better = b.mean > a.mean if higher else b.mean < a.mean
    return Goal(text, MET if better else MISSED, f"E+F {a}, E+F+H {b}")


#: What the data-efficiency goal compares: metric → (higher is better, test set).
_DATA_GOAL = {
    "hessian_mae": (False, None),
    "forces_mae": (False, None),
    "frequency_mae": (False, None),
    "ts_success_endpoints_model_hessian": (True, "heldout"),
}


def _data_goal(
    ef: GroupSummary, efh25: Optional[GroupSummary], test_set: str = GOAL_SET
) -> Goal:
    text = (
        "E+F+H at 25 % of the data at least as good as E+F at 100 % (Hessian, "
        "force and frequency MAE; TS success from end points where searched)"
    )
    if efh25 is None:
        return Goal(text, NOT_MEASURED, "no E+F+H run at 25 %")
    parts, ok = [], True
    for key, (higher, where) in _DATA_GOAL.items():
        a, b = _metric(ef, key, where or test_set), _metric(
            efh25, key, where or test_set
        )
        if a is None or b is None:
            if where is None:
                return Goal(text, NOT_MEASURED, f"no {key}")
            continue
        ok &= b.mean >= a.mean if higher else b.mean <= a.mean
        parts.append(f"{key}: E+F 100 % {a}, E+F+H 25 % {b}")
    return Goal(text, MET if ok else MISSED, "; ".join(parts))


def _index_goal(efh: GroupSummary, test_set: str) -> Goal:
    text = "imaginary-mode count (index) agreement of E+F+H ≥ 0.85"
    b = _metric(efh, "imaginary_count_accuracy", test_set)
    if b is None:
        return Goal(text, NOT_MEASURED, "no index agreement")
    return Goal(text, MET if b.mean >= 0.85 else MISSED, f"E+F+H {b}")


def _endpoint_ts_goal(ef: GroupSummary, efh: GroupSummary) -> Goal:
    text = "TS success from end points ≥ 2× E+F's, with fewer steps (model Hessian)"
    key, steps = (
        "ts_success_endpoints_model_hessian",
        "ts_steps_endpoints_model_hessian",
    )
    a, b = _metric(ef, key, "heldout"), _metric(efh, key, "heldout")
    if a is None or b is None:
        return Goal(text, NOT_MEASURED, "no TS searches from end points")
    sa, sb = _metric(ef, steps, "heldout"), _metric(efh, steps, "heldout")
    fewer = sa is None or (sb is not None and sb.mean < sa.mean)
    ok = b.mean >= 2 * a.mean and b.mean > 0 and fewer
    steps_of = {
        name: "– (no successful search)" if summary is None else str(summary)
        for name, summary in (("ef", sa), ("efh", sb))
    }
    evidence = (
        f"success E+F {a}, E+F+H {b}; median steps E+F {steps_of['ef']}, "
        f"E+F+H {steps_of['efh']}"
    )
    return Goal(text, MET if ok else MISSED, evidence)


def _hvp_goal(
    ef: GroupSummary, full: GroupSummary, hvps: Dict[str, GroupSummary]
) -> Goal:
    text = (
        "HVP (k ≤ 2) keeps ≥ 90 % of the full-Hessian gain at ≤ 2.5× the E+F epoch time"
    )
    if not hvps:
        return Goal(text, NOT_MEASURED, "no HVP / rows runs")
    h_ef, h_full = _metric(ef, "hessian_mae"), _metric(full, "hessian_mae")
    if h_ef is None or h_full is None or ef.epoch_seconds.n == 0:
        return Goal(text, NOT_MEASURED, "no Hessian MAE or epoch time of E+F / full")
    gain = h_ef.mean - h_full.mean
    parts, ok = [], False
    for mode, s in hvps.items():
        h = _metric(s, "hessian_mae")
        if h is None or s.epoch_seconds.n == 0:
            continue
        kept = (h_ef.mean - h.mean) / gain if gain > 0 else float("nan")
        ratio = s.epoch_seconds.mean / ef.epoch_seconds.mean
        ok |= kept >= 0.9 and ratio <= 2.5
        parts.append(f"{mode}: {kept:.1%} of the gain at {ratio:.2f}× the E+F epoch")
    if not parts:
        return Goal(text, NOT_MEASURED, "no scored HVP runs")
    return Goal(text, MET if ok else MISSED, "; ".join(parts))


def check_goals(
    summary: Dict[str, GroupSummary],
    model: str,
    hessian: str = "full",
    test_set: str = GOAL_SET,
) -> List[Goal]:
    """The goals for one model (``painn`` or ``schnet``) of a study summary.

    Args:
        hessian: the Hessian mode of the E+F+H arm judged against E+F (the plan's
            :attr:`~.matrix.StudyPlan.ts_hessian`).
        test_set: the test set the accuracy goals are judged on (TS searches are
            always judged on the held-out reactions).
    """
    ef = summary.get(Arm("EF", model, "none").group)
    efh = summary.get(Arm("EFH", model, hessian).group)
    if ef is None or efh is None:
        return [
            Goal(
                f"all goals ({model})",
                NOT_MEASURED,
                f"E+F and E+F+H ({hessian}) at 100 % were not both run",
            )
        ]
    goals = [
        _reduction_goal("Hessian MAE −70 %", "hessian_mae", ef, efh, 0.70, test_set),
        _reduction_goal("force MAE −40 %", "forces_mae", ef, efh, 0.40, test_set),
        _reduction_goal("energy MAE −20 %", "energy_mae", ef, efh, 0.20, test_set),
        _better_goal("frequency MAE lower", "frequency_mae", ef, efh, False, test_set),
        _reduction_goal(
            "frequency MAE −60 %", "frequency_mae", ef, efh, 0.60, test_set
        ),
        _index_goal(efh, test_set),
        _better_goal(
            "TS-search success higher (model Hessian; held-out reactions' TSs)",
            "ts_success_model_hessian",
            ef,
            efh,
            True,
            test_set="heldout",
        ),
        _endpoint_ts_goal(ef, efh),
        _data_goal(ef, summary.get(Arm("EFH", model, hessian, 0.25).group), test_set),
    ]
    full = summary.get(Arm("EFH", model, "full").group)
    hvps = {
        mode: summary[Arm("EFH", model, mode).group]
        for mode in ("hvp-k1", "hvp-k2", "rows-k2")
        if Arm("EFH", model, mode).group in summary
    }
    if full is not None:
        goals.append(_hvp_goal(ef, full, hvps))
    return goals
