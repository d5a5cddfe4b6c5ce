"""The README stays true: its Python example trains a Hessian-aware PaiNN and its
set-up section holds exactly the two commands CI runs."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_setup_section_has_the_install_and_test_commands():
    setup = README.read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = [b.strip() for b in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)]
    assert commands == [
        "pip install . && spktrain experiment=hessian_demo",
        'pip install ".[test]" && python -m pytest',
    ]
    ci = (README.parent / ".ci" / "run").read_text()
    # CI runs the same two steps, each of which fails the script under set -e
    assert "set -euo pipefail" in ci
    assert '\npip install ".[test]"\nrun_suite "plain install"\n' in ci


@pytest.mark.integration
def test_python_example_trains_on_the_shipped_set(tmp_path, monkeypatch, capsys):
    example = code_blocks("python")[0]  # the Python API section
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert namespace["trainer"].global_step == 20
    out = capsys.readouterr().out
    assert "irc {" in out and "hessian_mae" in out
    assert (tmp_path / "split.npz").exists()
