"""The README's "Adding an experiment" walk-through, followed to the letter: a copy of the
repository gets exactly the three files the README shows (model, task, config) and nothing
else, and the new experiment's smoke preset trains, evaluates and improves."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _walkthrough_files() -> dict[str, str]:
    """path -> text of every ```python block in the README section whose first line names
    a file (`# dllab_jax/...py`)."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Adding an experiment\n", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("# ") and first.endswith(".py"):
            files[first[2:]] = rest
    return files


def test_the_walkthrough_names_one_model_one_task_one_config():
    assert sorted(_walkthrough_files()) == [
        "configs/masked_autoencoding.py",
        "dllab_jax/models/masked_autoencoder.py",
        "dllab_jax/tasks/masked_autoencoding.py",
    ]


def test_an_eighth_experiment_needs_only_the_three_files(tmp_path):
    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "dllab_jax", copy / "dllab_jax", ignore=ignore)
    shutil.copytree(REPO_ROOT / "configs", copy / "configs", ignore=ignore)
    shutil.copy(REPO_ROOT / "main.py", copy / "main.py")
    for path, text in _walkthrough_files().items():
        assert not (copy / path).exists(), path
        (copy / path).write_text(text)

    workdir = tmp_path / "run"
    # main.py's folder comes first on sys.path, so the copy's dllab_jax is the one imported
    # (the task and model exist only there: a run of the installed package would fail).
    result = subprocess.run(
        [
            sys.executable,
            "main.py",
            "--config=configs/masked_autoencoding.py:smoke",
            f"--workdir={workdir}",
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == 24
    evaluations = [
        json.loads(line)
        for line in (workdir / "metrics.jsonl").read_text().splitlines()
        if "val/masked_mse" in line
    ]
    first, last = evaluations[0]["val/masked_mse"], summary["metrics"]["val/masked_mse"]
    # Pixels are in [0, 1]: an untrained net is far off, 24 steps of Adam bring it down.
    assert 0.0 < last < first, (first, last)
    assert 0.0 < summary["metrics"]["test/masked_mse"] < 0.5
