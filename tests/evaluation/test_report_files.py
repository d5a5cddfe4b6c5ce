"""The evaluation's files on a fixed fixture are those written before metrics were typed.

``data/report_files/`` holds ``structures.csv`` (both unit systems), ``metrics.json``,
the report tables, the study's flat metrics and its metric labels, written by the code
that converted units by key name (commit 53a611d) from two fake models' predictions on
shipped structures. The test writes them again and compares: csv headers and cells
exactly, json keys exactly and numbers to 1e-9 relative, the tables exactly. One change
is intended: see :func:`_lists_converted`.

The fixture: reactions 0 and 2 of the shipped set, reaction 1 without its product
(a NaN reverse barrier, no IRC profile), one structure without a reference Hessian and
one unlabelled; predictions are the reference plus seeded noise (no model), and the TS
searches are fixed results. Rows, pools, barriers and profiles come from the library.

Regenerate (only when a change of the files is intended, and say so in the commit)::

    python tests/evaluation/test_report_files.py
"""

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List
from unittest import mock

import numpy as np
import pytest
from ase import units

from schnetpack_hessian.data import iread
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.evaluation import downstream
from schnetpack_hessian.evaluation.predict import Prediction
from schnetpack_hessian.evaluation.reactions import (
    BARRIER_ROW,
    BARRIER_STATS,
    PROFILE_ROW,
    PROFILE_STATS,
)
from schnetpack_hessian.evaluation.report import (
    group_table,
    summary_table,
    write_metrics,
    write_structures_csv,
)
from schnetpack_hessian.evaluation.structures import POOLED, STRUCTURE_ROW
from schnetpack_hessian.evaluation.tssearch import (
    TSSearchResult,
    summarize_ts_searches,
)
from schnetpack_hessian.quantities import Dimension, Quantity
from schnetpack_hessian.study.scoring import METRICS, flat_metrics

DATA = Path(__file__).resolve().parent / "data" / "report_files"
NAMES = {0: "HCN -> HNC", 1: "HNO -> HON"}
SETTINGS = {"data": "fixture", "ts_rmsd_threshold": 0.2}
GROUPS = {"both": ["noisy", "noisier"], "one": ["noisy"]}


def _structures():
    """Shipped structures of reactions 0–2 with the gaps described above."""
    out = []
    for atoms in iread(reactive_set_path()):
        rid, kind = atoms.info["reaction"], atoms.info["kind"]
        if rid > 2 or (rid == 1 and kind == "product"):
            continue
        if (
            rid == 2
            and kind == "nms"
            and sum(a.info["reaction"] == 2 for a in out) > 16
        ):
            continue
        out.append(atoms)
    no_hessian = next(
        a for a in out if a.info["reaction"] == 2 and a.info["kind"] == "irc"
    )
    no_hessian.info.pop("hessian")
    unlabelled = next(
        a for a in out if a.info["reaction"] == 2 and a.info["kind"] == "nms"
    )
    unlabelled.info["reaction"] = -1
    return out


def _predictions(structures, seed: int, scale: float) -> List[Prediction]:
    """Reference plus seeded noise: ``scale`` × (0.02 eV, 0.05 eV/Å, 0.5 eV/Å²)."""
    rng = np.random.default_rng(seed)
    out = []
    for atoms in structures:
        n = 3 * len(atoms)
        noise = rng.normal(size=(n, n))
        ref_h = atoms.info.get("hessian")
        if ref_h is None:
            ref_h = np.zeros((n, n))
        out.append(
            Prediction(
                energy=atoms.get_potential_energy() + scale * 0.02 * rng.normal(),
                forces=atoms.get_forces() + scale * 0.05 * rng.normal(size=(n // 3, 3)),
                hessian=ref_h + scale * 0.25 * (noise + noise.T),
            )
        )
    return out


def _ts_results(scale: float) -> List[TSSearchResult]:
    """Fixed TS-search outcomes of both methods on reactions 0 and 2."""
    out = []
    for method, k in (("model_hessian", 0), ("sella_updates", 1)):
        for rid in (0, 2):
            ok = not (k and rid == 2)
            out.append(
                TSSearchResult(
                    reaction=rid,
                    start="perturbed",
                    method=method,
                    converged=True,
                    steps=10 + 3 * k + rid,
                    force_calls=12 + 3 * k + rid,
                    hessian_calls=0 if k else 10 + rid,
                    n_imaginary=1,
                    rmsd=scale * (0.01 + 0.1 * k + 0.01 * rid),
                    success=ok,
                    seconds=1.0,
                )
            )
    return out


def build_reports():
    """Two fake models' reports on the fixture, through ``evaluate_downstream``."""
    structures = _structures()
    reports = []
    for name, seed, scale in (("noisy", 0, 1.0), ("noisier", 1, 3.0)):
        preds = _predictions(structures, seed, scale)
        model = SimpleNamespace(name=name, elements=None)
        with mock.patch.object(downstream, "predict", lambda *a, **k: preds):
            report = downstream.evaluate_downstream(
                model, structures, reaction_names=NAMES, ts_settings=None
            )
        report.ts_results = _ts_results(scale)
        report.ts_summary = summarize_ts_searches(report.ts_results)
        report.seconds = {}
        reports.append(report)
    return reports


def write_files(reports, out: Path) -> None:
    """Every compared file of ``reports`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_metrics(out / "metrics.json", reports, SETTINGS)
    write_structures_csv(out / "structures.csv", reports)
    write_structures_csv(out / "structures_ev.csv", reports, "eV")
    tables = [summary_table(reports), summary_table(reports, "eV")]
    tables += [group_table(reports, GROUPS), group_table(reports, GROUPS, "eV")]
    (out / "tables.md").write_text("\n\n".join(tables) + "\n")
    flat = {r.model: flat_metrics(r) for r in reports}
    (out / "flat_metrics.json").write_text(json.dumps(flat, indent=2) + "\n")
    study = json.dumps(METRICS, indent=2, ensure_ascii=False)
    (out / "study_metrics.json").write_text(study + "\n", encoding="utf-8")


def _same_json(got, want, where: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            _same_json(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for k, (g, w) in enumerate(zip(got, want)):
            _same_json(g, w, f"{where}[{k}]")
    elif isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and not isinstance(got, bool), where
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (where, got, want)
    else:
        assert got == want and type(got) is type(want), (where, got, want)


def _lists_converted(metrics: Dict) -> Dict:
    """``metrics.json`` as written before, with its one intended change: the per-reaction
    barrier and IRC-profile rows of the kcal/mol block were left in eV (lists were not
    converted, only mappings); now every quantity converts, wherever it is."""
    kcal_per_ev = units.mol / units.kcal
    for model in metrics["models"].values():
        block = model["kcal/mol"]
        rows = block["barriers"]["reactions"] + block["irc_profiles"]["reactions"]
        for row in rows:
            for key, value in row.items():
                if key.startswith("barrier_") or key == "max_deviation":
                    row[key] = None if value is None else value * kcal_per_ev
    return metrics


def _rows(path: Path) -> List[List[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def reports():
    return build_reports()


@pytest.fixture(scope="module")
def written(reports, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report_files")
    write_files(reports, out)
    return out


def test_every_number_with_a_declared_dimension_is_a_quantity_of_it(reports):
    for report in reports:
        records = [
            (STRUCTURE_ROW, report.rows),
            (POOLED, [report.pooled["all"], *report.pooled["kind"].values()]),
            (BARRIER_ROW, report.barriers),
            (BARRIER_STATS, [report.barrier_stats]),
            (PROFILE_ROW, [p.as_row() for p in report.profiles]),
            (PROFILE_STATS, [report.profile_stats]),
        ]
        for schema, rows in records:
            for row in rows:
                for key, value in row.items():
                    dim = schema.fields[key]
                    assert isinstance(value, Quantity) == (dim is not None), key
                    assert dim is None or value.dimension is dim, key
        assert all(p.energy.dimension is Dimension.ENERGY for p in report.predictions)


@pytest.mark.parametrize("name", ["structures.csv", "structures_ev.csv"])
def test_structures_csv_is_unchanged(written, name):
    got, want = _rows(written / name), _rows(DATA / name)
    assert got[0] == want[0]
    assert len(got) == len(want)
    for g, w in zip(got[1:], want[1:]):
        assert dict(zip(got[0], g)) == dict(zip(want[0], w))


@pytest.mark.parametrize(
    "name", ["metrics.json", "flat_metrics.json", "study_metrics.json"]
)
def test_json_files_are_unchanged(written, name):
    got: Dict = json.loads((written / name).read_text())
    want: Dict = json.loads((DATA / name).read_text())
    _same_json(got, _lists_converted(want) if name == "metrics.json" else want)


def test_tables_are_unchanged(written):
    assert (written / "tables.md").read_text() == (DATA / "tables.md").read_text()


if __name__ == "__main__":
    write_files(build_reports(), DATA)
