"""``reactive_set_path("xtb")`` and ``data=reactive_chon_xtb``: the bulk GFN2-xTB set
is found by level of theory, and its absence is a clear FileNotFoundError."""

from pathlib import Path

import pytest

import schnetpack_hessian.datasets as datasets
from schnetpack_hessian.datasets import reactive_set_path

CONFIGS = Path(datasets.__file__).resolve().parents[1] / "configs"


def test_xtb_set_is_looked_up_by_level(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DATASET_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"reactive_chon_xtb\.h5 \(xtb\)"):
        reactive_set_path("xtb")
    (tmp_path / "reactive_chon_xtb.h5").write_bytes(b"")
    assert reactive_set_path("xtb") == tmp_path / "reactive_chon_xtb.h5"
    with pytest.raises(FileNotFoundError, match="reactive_chon.h5"):
        reactive_set_path()
    with pytest.raises(ValueError, match="'b3lyp'"):
        reactive_set_path("b3lyp")


def test_data_config_points_at_the_xtb_set(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from omegaconf.errors import InterpolationResolutionError

    import hydra_plugins.schnetpack_hessian_searchpath.searchpath  # noqa: F401

    monkeypatch.setattr(datasets, "DATASET_DIR", tmp_path)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(overrides=["+data=reactive_chon_xtb"])
    assert cfg.data.splitting.by_reaction is True
    assert list(cfg.data.extrapolation_kinds) == ["irc", "nms"]
    with pytest.raises(InterpolationResolutionError, match="reactive_chon_xtb"):
        cfg.data.datapath
    (tmp_path / "reactive_chon_xtb.h5").write_bytes(b"")
    assert cfg.data.datapath == str(tmp_path / "reactive_chon_xtb.h5")
