"""CPU-hours of a study directory's runs, measured, per run and arm: the table under
"The bulk run" in docs/RESULTS.md.

    python studies/cpu_budget.py studies/cpu_xtb

Training: the CPU time of every spktrain process of a run (``train_process.json``:
epochs, validation, start-up and the end-of-training report).  The first runs of the
bulk study were trained before that record existed; for them (marked "est.") the
whole process is estimated as median CPU s per training epoch (``cost.json``) × the
run's epochs (its learning curve) × the run's ratio of whole-process to training-epoch
time.  That ratio is the wall-time ratio (``config.yaml`` to ``best_model``, over the
epochs' wall time) for a run trained in one go, which matches the CPU ratio where both
are known; for a resumed run, the median ratio of its arm's other runs.  File times
are this machine's: run it in the study's own directory, not in a fresh clone.
Scoring: the scoring process's CPU time (``result.json``, ``eval_cpu_seconds``).
Runs not yet trained or scored are left out of the totals.
"""

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional


def _json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def _epochs(run: Path) -> int:
    """Epochs of a run's learning curve (the largest epoch logged, + 1)."""
    last = -1
    for path in run.glob("csv/version_*/metrics.csv"):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get("epoch"):
                    last = max(last, int(float(row["epoch"])))
    return last + 1


def _wall_ratio(run: Path, cost: dict) -> Optional[float]:
    """Whole-process over training-epoch wall time of a run trained in one go."""
    configs = list(run.glob("config*.yaml"))
    if len(configs) != 1 or not (run / "best_model").exists():
        return None  # resumed (config.old.*) or unfinished
    wall = (run / "best_model").stat().st_mtime - configs[0].stat().st_mtime
    return wall / sum(cost["epoch_seconds"])


def _run_row(run: Path) -> Dict[str, object]:
    cost = _json(run / "cost.json") or {}
    process = _json(run / "train_process.json")
    result = _json(run / "result.json")
    cpu = cost.get("epoch_cpu_seconds", [])
    epochs = _epochs(run)
    process_cpu = sum(p["cpu_seconds"] for p in process) if process else None
    ratio = None
    if process_cpu and cpu and len(cpu) == epochs:
        ratio = process_cpu / sum(cpu)
    elif cpu and not process_cpu:
        ratio = _wall_ratio(run, cost)
    return dict(
        run=run.name,
        group=run.name.rsplit("-s", 1)[0],
        epochs_cpu=statistics.median(cpu) * epochs if cpu else None,
        process_cpu=process_cpu,
        scoring_cpu=result.get("eval_cpu_seconds") if result else None,
        ratio=ratio,
        finished=(run / "best_model.task").exists() or process is not None,
    )


def main(study: str) -> int:
    runs = sorted(p for p in (Path(study) / "runs").iterdir() if p.is_dir())
    rows = [_run_row(run) for run in runs]
    ratios: Dict[str, List[float]] = defaultdict(list)
    for r in rows:
        if r["ratio"] is not None:
            ratios[r["group"]].append(r["ratio"])
    print("| run | training CPU h | scoring CPU h |")
    print("| --- | --- | --- |")
    totals = {"train": 0.0, "score": 0.0}
    per_group: Dict[str, List[float]] = defaultdict(list)
    for r in rows:
        train, note = r["process_cpu"], ""
        ratio = r["ratio"] or (
            statistics.median(ratios[r["group"]]) if ratios[r["group"]] else None
        )
        if train is None and r["finished"] and r["epochs_cpu"] and ratio:
            train, note = r["epochs_cpu"] * ratio, " (est.)"
        if not r["finished"]:
            train = None
        cells = []
        for value, key, suffix in ((train, "train", note), (r["scoring_cpu"], "score", "")):
            if value is None:
                cells.append("–")
                continue
            totals[key] += value / 3600
            cells.append(f"{value / 3600:.2f}{suffix}")
        if train is not None:
            per_group[r["group"]].append(train / 3600)
        print(f"| {r['run']} | {cells[0]} | {cells[1]} |")
    print("\n| arm | trained runs | training CPU h per run (mean) |")
    print("| --- | --- | --- |")
    for group, hours in sorted(per_group.items()):
        print(f"| {group} | {len(hours)} | {statistics.mean(hours):.2f} |")
    print(
        f"\nTotal so far: training {totals['train']:.1f} CPU h, scoring "
        f"{totals['score']:.1f} CPU h, together {sum(totals.values()):.1f} CPU h."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
