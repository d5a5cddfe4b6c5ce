"""Exported and pretrained models: trained by spkhess-pretrain, loaded without pickle
by name or path everywhere a model path is accepted, reproducing their card."""

import json
import re
import warnings
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

import schnetpack.transform as trn

from schnetpack_hessian import HessianCalculator, pretrained
from schnetpack_hessian.cli.pretrain import main
from schnetpack_hessian.data import iread
from schnetpack_hessian.datasets import reactive_set_path
from schnetpack_hessian.evaluation.model import EvaluationError, load_model
from schnetpack_hessian.study.runner import load_study_data
from schnetpack_hessian.study.scoring import score_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny E+F+H PaiNN trained on every shipped reaction by spkhess-pretrain."""
    work = tmp_path_factory.mktemp("pretrain")
    argv = [
        "--data", "shipped", "--targets", "EFH", "--name", "tiny-efh",
        "-o", str(work / "train"), "--export-dir", str(work / "models"),
        "--max-epochs", "2", "--n-atom-basis", "8", "--n-interactions", "1",
        "--score-per-set", "24",
    ]  # fmt: skip
    assert main(argv) == 0
    return work / "models"


def test_export_loads_weights_only_and_matches_the_trained_model(exported):
    path = exported / "tiny-efh.pt"
    record = torch.load(path, weights_only=True)  # plain data: no pickle of code
    assert record["format"] == pretrained.EXPORT_FORMAT
    run = exported.parent / "train" / "runs" / "tiny-efh"
    original = load_model(run)
    again = load_model(path)
    atoms = next(iter(iread(reactive_set_path())))
    h1 = original.calculator().get_hessian(atoms.copy())
    h2 = again.calculator().get_hessian(atoms.copy())
    np.testing.assert_array_equal(h1, h2)
    assert again.energy_unit == "kcal/mol" and again.cutoff == original.cutoff


def test_card_errors_are_reproduced_by_name(exported, monkeypatch):
    monkeypatch.setattr(pretrained, "MODEL_DIR", exported)
    assert pretrained.available() == ["tiny-efh"]
    card = (exported / "tiny-efh.md").read_text()
    assert "spkhess-pretrain --data shipped --targets EFH" in card
    assert "not** a replacement for DFT" in card
    assert "Measured errors on 24 IRC/NMS structures" in card
    facts = json.loads((exported / "tiny-efh.json").read_text())
    assert len(facts["check"]["structures"]) == 8
    assert facts["check"]["structures"] == facts["scored"][:8]
    data = load_study_data(reactive_set_path())
    again = score_run(
        "pretrained:tiny-efh",
        {"irc_nms": data.subset(facts["scored"])},
        ts_settings=None,
    )["irc_nms"]
    for key in ("energy_mae", "forces_mae", "hessian_mae"):
        assert again[key] == pytest.approx(facts["metrics"][key], rel=1e-9)
        assert f"{facts['metrics'][key]:.3g}" in card
    calc = HessianCalculator(
        "pretrained:tiny-efh", trn.MatScipyNeighborList(5.0), energy_unit="kcal/mol"
    )
    atoms = next(iter(iread(reactive_set_path())))
    assert calc.get_hessian(atoms).shape == (3 * len(atoms), 3 * len(atoms))
    with pytest.raises(EvaluationError, match="available: \\['tiny-efh'\\]"):
        load_model("pretrained:nope")


def test_crafted_export_naming_other_code_is_refused(exported, tmp_path):
    record = torch.load(exported / "tiny-efh.pt", weights_only=True)
    marker = tmp_path / "ran"
    record["model_config"]["representation"] = {
        "_target_": "os.system",
        "command": f"touch {marker}",
    }
    bad = tmp_path / "bad.pt"
    torch.save(record, bad)
    with pytest.raises(pretrained.PretrainedError, match="os.system"):
        pretrained.load_exported(bad)
    record["model_config"]["representation"] = {
        "_target_": "schnetpack.utils.load_model"
    }
    torch.save(record, bad)
    with pytest.raises(pretrained.PretrainedError, match="not a module"):
        pretrained.load_exported(bad)
    assert not marker.exists()


@pytest.mark.parametrize("name", pretrained.available())
def test_shipped_model_loads_by_name_and_reproduces_its_card(name):
    """Every model shipped in the package: loads by name without pickle, its card
    states the data, units and intended use, and its recorded errors on a few
    structures are reproduced."""
    facts = json.loads((pretrained.MODEL_DIR / f"{name}.json").read_text())
    card = (pretrained.MODEL_DIR / f"{name}.md").read_text()
    assert f"pretrained:{name}" in card and "not** a replacement for DFT" in card
    assert "spkhess-pretrain" in card  # the command that made it
    shipped = {reactive_set_path(level).name: level for level in ("wb97x", "xtb")}
    check = facts["check"]
    wanted = check["structures"]
    read = islice(
        iread(reactive_set_path(shipped[facts["data_file"]])), max(wanted) + 1
    )
    structures = {i: atoms for i, atoms in enumerate(read) if i in wanted}
    again = score_run(
        f"pretrained:{name}",
        {"check": [structures[i] for i in wanted]},
        ts_settings=None,
    )["check"]
    for key in ("energy_mae", "forces_mae", "hessian_mae"):
        assert again[key] == pytest.approx(check["metrics"][key], rel=1e-6)


def test_applications_pretrained_search_runs_as_written():
    """docs/APPLICATIONS.md's pretrained section, executed as written: the shipped
    E+F+H model finds reaction 9's saddle point from its end points, with one imaginary
    mode, and its IRC joins the reactant and the product."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "APPLICATIONS.md"
    (block,) = re.findall(r"```python pretrained\n(.*?)```", doc.read_text(), re.S)
    ns = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, str(doc), "exec"), ns)
    assert ns["converged"]
    frequencies = ns["modes"].frequencies
    assert frequencies[0] < -100 and frequencies[1] > 0  # one imaginary mode
    reactant, product, guess, calc = (
        ns[k] for k in ("reactant", "product", "guess", "calc")
    )
    assert ns["irc_connects"](guess, reactant, product, calc, calc.get_hessian)
