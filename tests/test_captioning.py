"""E6 captioning task end to end on the smoke preset: the image tower comes from the retrieval
pre-training (made first) and stays frozen; evaluation decodes and scores BLEU."""

import json

import jax
import numpy as np
import pytest

from dllab_jax import checkpoint, train
from dllab_jax.config_utils import load_config


def _config(preset, tmp_path):
    config = load_config(f"configs/captioning.py:{preset}")
    config.init_from.workdir = str(tmp_path / "retrieval-pretrain")
    return config


@pytest.fixture(scope="module")
def captioning_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("captioning")
    summary = train.train_and_evaluate(_config("smoke", tmp_path), tmp_path / "run")
    return tmp_path, summary


def test_smoke_run_scores_bleu_and_keeps_the_pretrained_image_tower(captioning_run):
    tmp_path, summary = captioning_run
    metrics = summary["metrics"]
    for split in ("val", "test"):
        for n in (1, 2, 3, 4):
            assert 0.0 <= metrics[f"{split}/bleu{n}"] <= 1.0
        assert metrics[f"{split}/captions_per_s"] > 0
    assert (tmp_path / "run" / "captions_val.png").exists()
    pretrained = checkpoint.read_variables(tmp_path / "retrieval-pretrain", "best")[0]["params"]
    trained = checkpoint.read_variables(tmp_path / "run", "latest")[0]["params"]
    jax.tree.map(np.testing.assert_array_equal, pretrained["vision_model"], trained["vision_model"])


def test_eval_mode_with_another_prompt_and_sampling(captioning_run):
    tmp_path, _ = captioning_run
    config = _config("topk,an_image_of,smoke", tmp_path)
    out = train.evaluate_checkpoint(config, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["metrics"] == out["metrics"]
    assert 0.0 <= out["metrics"]["val/bleu4"] <= 1.0


def test_prompt_is_stripped_from_generated_text(tmp_path):
    config = _config("smoke", tmp_path)
    exp = train.build_experiment(config, workdir=tmp_path / "w")
    task = exp.task
    assert task.prompt_ids[0] == task.bos_id  # [DEC] first, no [SEP] after the prompt
    assert task.eos_id not in task.prompt_ids.tolist()
    assert task._strip_prompt("a picture of a red circle") == "a red circle"
    assert task._strip_prompt("A Picture of a red circle") == "a red circle"
    assert task._strip_prompt("a red circle") == "a red circle"
