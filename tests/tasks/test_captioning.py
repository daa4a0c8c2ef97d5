"""E6 captioning task end to end on the smoke preset: the image tower comes from the retrieval
pre-training (made first) and stays frozen; evaluation decodes and scores BLEU."""

import json

import jax
import numpy as np
import pytest
from voc_stand_in import write_tiny_voc

from dllab_jax import checkpoint, init_from, train
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_voc_blip_preset_evaluates_a_published_captioner_folder(tmp_path, tiny_blip_config):
    """The faithful path on stand-ins: a tiny random BlipForConditionalGeneration saved as
    published (with a tokenizer), a tiny VOC folder with a captions JSON."""
    torch = pytest.importorskip("torch")
    from transformers import BlipForConditionalGeneration

    from dllab_jax.data import tokenizer as tokenizer_lib

    folder = tmp_path / "blip"
    corpus = ["a dog on a sofa", "two people riding horses", "a red bus in the street"] * 5
    tokenizer = tokenizer_lib.train_wordpiece(corpus, 90, str(folder))
    torch.manual_seed(0)
    text_ids = dict(
        bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"),
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
    hf_config = tiny_blip_config(len(tokenizer), 40, text_ids)
    BlipForConditionalGeneration(hf_config).save_pretrained(folder)

    ids = {"train": [f"2008_{i:06d}" for i in range(4)], "val": ["2009_000001"]}
    root, captions_json = write_tiny_voc(tmp_path, ids, lambda *_: ["a dog on a sofa", "a red bus"])

    config = load_config("configs/captioning.py:voc_blip,smoke")
    config.data.root, config.data.captions_json = str(root), str(captions_json)
    config.data.image_size = 16
    config.init_from.workdir = config.tokenizer.dir = str(folder)
    config.tokenizer.max_len = 16
    config.batch_size = config.eval_batch_size = 4
    config.data.name = "voc_captions"
    # The towers of the tiny HF folder (nested sub-configs, as config.model holds them).
    config.model.image.update(
        dict(image_size=16, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
    )
    text = dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
    config.model.text.update(text, vocab_size=len(tokenizer), max_position_embeddings=40)
    config.eval_splits = ("val",)
    summary = train.train_and_evaluate(config, tmp_path / "run")
    assert 0.0 <= summary["metrics"]["val/bleu4"] <= 1.0
    # learning rate 0: the run evaluates, and saves, exactly the published weights
    published = init_from.read_init_source(
        "hf_blip_captioner",
        folder,
        "best",
        sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]),
    )[0]["params"]
    saved = checkpoint.read_variables(tmp_path / "run", "latest")[0]["params"]
    jax.tree.map(np.testing.assert_array_equal, published, saved)
