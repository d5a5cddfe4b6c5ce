"""Stage the finished trainings of a study directory for a commit (valid on their own:
a fresh clone scores them without retraining); runs still training are left out.

    python studies/commit_finished.py studies/cpu_xtb && git commit -m "..."
"""

import json
import subprocess
import sys
from pathlib import Path

from schnetpack_hessian.study.runner import BUDGET_FILE, training_finished


def main(study: str) -> int:
    study = Path(study)
    budget = json.loads((study / BUDGET_FILE).read_text())["budget"]
    paths = [study / BUDGET_FILE] + [p for p in (study / "RESULTS.md",) if p.exists()]
    finished = []
    for run in sorted((study / "runs").iterdir()):
        if training_finished(run, budget["max_epochs"], budget["patience"]):
            finished.append(run.name)
            paths.append(run)
            split = study / "splits" / f"{run.name}.npz"
            if split.exists():
                paths.append(split)
    subprocess.run(["git", "add", "--", *map(str, paths)], check=True)
    print(f"{study}: {len(finished)} finished runs staged: {', '.join(finished)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
