"""spkhess-bench --epochs's measurement, CI-sized: the epoch times of two arms with
plain shuffling and size buckets, the table, and no rerun of a finished run."""

import pytest

from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.study.epochs import (
    epoch_table,
    full_hessian_passes,
    time_epochs,
)
from schnetpack_hessian.study.matrix import Arm, Budget
from schnetpack_hessian.study.runner import load_study_data

pytestmark = pytest.mark.integration


def test_epoch_times_with_and_without_buckets(tmp_path):
    data = load_study_data(reactive_set_path())
    # one arm: the Hessian arms' training is tested in test_spktrain and the study
    arms = (Arm("EF", hessian="none"),)
    tiny = Budget(n_atom_basis=8, n_interactions=1)
    rows = time_epochs(data, tmp_path, arms, n_epochs=2, fraction=0.5, budget=tiny)
    assert [(r.group, r.buckets) for r in rows] == [
        ("EF-painn-100pct", None),
        ("EF-painn-100pct", 1),
    ]
    assert all(r.seconds > 0 and r.peak_rss_mb > 50 for r in rows)
    assert all(0 < r.cpu_seconds < 3 * r.seconds for r in rows)  # one thread
    assert len({r.n_train for r in rows}) == 1 and rows[0].n_batches >= 1
    config = (tmp_path / "runs/EF-painn-100pct-buckets1/config.yaml").read_text()
    assert "size_buckets: 1" in config
    plain = (tmp_path / "runs/EF-painn-100pct-plain/config.yaml").read_text()
    assert "size_buckets: null" in plain
    logs = sorted(tmp_path.glob("runs/*/spktrain.log"))
    before = [p.stat().st_mtime_ns for p in logs]
    again = time_epochs(data, tmp_path, arms, n_epochs=2, fraction=0.5, budget=tiny)
    assert again == rows and [p.stat().st_mtime_ns for p in logs] == before
    table = epoch_table(rows).splitlines()
    assert table[0].endswith("buckets1 / plain |") and len(table) == 3
    assert "CPU s/epoch (plain)" in table[0]
    assert "| s/epoch (plain)" in epoch_table(rows, "seconds").splitlines()[0]
    assert table[2].split("|")[3].strip() == "1.00"  # E+F is its own reference


def test_epoch_times_need_two_epochs(tmp_path):
    data = load_study_data(reactive_set_path())
    with pytest.raises(ValueError, match="n_epochs"):
        time_epochs(data, tmp_path, n_epochs=1)


def test_full_hessian_passes_plain_and_bucketed():
    sizes = [3] * 8 + [13] * 8
    # buckets of one size: one batch of 3-atom molecules (3 passes), one of 13 (33)
    assert full_hessian_passes(sizes, 8, bucket_width=1) == 3 + 33
    plain = full_hessian_passes(sizes, 8, None, n_epochs=50)
    assert 36 < plain <= 66  # a mixed batch pays for its 13-atom molecule
    assert full_hessian_passes([5] * 16, 8, None) == 2 * 9
    weighted = full_hessian_passes(sizes, 8, bucket_width=1, atom_weighted=True)
    assert weighted == 3 * 24 + 33 * 104
