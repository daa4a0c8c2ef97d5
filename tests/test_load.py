"""Loading a run in plain Flax (dllab_jax/load.py): the README's snippet, verbatim."""

import re

import numpy as np
import pytest

from dllab_jax import train
from dllab_jax.config_utils import REPO_ROOT


@pytest.mark.slow
def test_readme_snippet_loads_a_run_in_plain_flax(tmp_path, monkeypatch, smoke_config):
    readme = (REPO_ROOT / "README.md").read_text()
    snippet = re.search(r"<!-- load-run-snippet -->\s*```python\n(.*?)```", readme, re.S)
    assert snippet, "README.md lost its load_run snippet"
    monkeypatch.chdir(tmp_path)
    config = smoke_config()
    summary = train.train_and_evaluate(config, tmp_path / "checkpoints" / "classification")
    namespace = {}
    exec(snippet.group(1), namespace)  # the README's lines, verbatim
    logits = np.asarray(namespace["logits"])
    assert logits.shape == (1, 10)
    # The loaded model reproduces the run's best-checkpoint accuracy on the val split.
    model, variables = namespace["model"], namespace["variables"]
    from dllab_jax.data import get_source
    from dllab_jax.tasks.classification import normalize_images

    val = get_source(config.data, "val").get(np.arange(config.data.num_val))
    images = normalize_images(val["image"], config.data.mean, config.data.std)
    accuracy = float((model.apply(variables, images).argmax(-1) == val["label"]).mean())
    assert accuracy == pytest.approx(summary["metrics"]["best/val/accuracy"], abs=1e-6)
