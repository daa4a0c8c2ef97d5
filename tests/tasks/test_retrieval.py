"""E7 retrieval task: InfoNCE against numpy, devices, frozen towers, the offline default's
pre-training dependency, and the faithful BLIP path on tiny stand-ins. Recall on hand-made
matrices is in tests/evaluators/test_recall.py."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from voc_stand_in import write_tiny_voc

from dllab_jax import checkpoint, init_from, parallel, train
from dllab_jax.config_utils import load_config
from dllab_jax.data import pipeline
from dllab_jax.data import tokenizer as tokenizer_lib
from dllab_jax.data.tokenizer import pick_one_caption
from dllab_jax.tasks.retrieval import contrastive_loss

TOWERS = ("vision_model", "text_encoder")


def test_contrastive_loss_matches_numpy():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 8))
    texts = rng.normal(size=(5, 8))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    logits = images @ texts.T / 0.1

    def ce(rows):  # mean cross-entropy of each row against its diagonal entry
        rows = rows - rows.max(1, keepdims=True)
        log_softmax = rows - np.log(np.exp(rows).sum(1, keepdims=True))
        return -np.mean(np.diag(log_softmax))

    expected = (ce(logits) + ce(logits.T)) / 2
    loss, _ = contrastive_loss(jnp.asarray(images), jnp.asarray(texts), jnp.asarray(0.1))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_pick_one_caption_picks_only_real_captions():
    n, k, length = 200, 3, 4
    ids = np.arange(n * k * length).reshape(n, k, length)
    mask = np.zeros((n, k), np.float32)
    mask[:, 0] = 1
    mask[::2, 2] = 1  # even images have captions 0 and 2, odd only 0
    batch = {
        "image": np.zeros((n, 1)),
        "input_ids": ids,
        "attention_mask": ids,
        "caption_mask": mask,
    }
    out = pick_one_caption(batch, np.random.default_rng(0))
    chosen = (out["input_ids"][:, 0] // length) % k
    assert set(chosen[1::2]) == {0}
    assert set(chosen[::2]) == {0, 2}
    assert "caption_mask" not in out and out["input_ids"].shape == (n, length)


# ---------------------------------------------------------------- training
def _config(preset, tmp_path, **overrides):
    config = load_config(f"configs/retrieval.py:{preset}")
    if config.init_from.make_with:
        config.init_from.workdir = str(tmp_path / "pretrain")
    config.update_from_flattened_dict(overrides)
    return config


@pytest.mark.slow
def test_one_and_four_devices_give_the_same_contrastive_loss(tmp_path):
    devices = jax.devices()
    losses = {}
    for n in (1, 4):
        # The recipe's 200-step warm-up (smoke runs drop it) keeps the updates small, so the
        # float noise of the reduction order is compared, not that noise grown by full steps.
        config = _config("pretrain,smoke", tmp_path, **{"optimizer.warmup_steps": 200})
        exp = train.build_experiment(
            config, mesh=parallel.make_mesh(devices[:n]), workdir=tmp_path / f"d{n}"
        )
        state = exp.init_state_fn(jax.random.key(0))
        batches = pipeline.train_batches(
            exp.task.source("train"), 16, seed=0, augment=exp.task.augment()
        )
        losses[n] = []
        for _ in range(3):
            state, metrics = exp.jitted_train_step(state, exp.place(next(batches)))
            losses[n].append(float(metrics["loss"]))
    # Reduction order differs between 1 and 4 devices (float noise, ~2e-5). Scoring each
    # device's 4 pairs instead of the global 16 would be off by ~50% (log 4 vs log 16).
    np.testing.assert_allclose(losses[1], losses[4], rtol=2e-4)
    assert losses[1][0] == pytest.approx(np.log(16), rel=0.05)  # global batch of 16 at init
    assert losses[1][0] != losses[1][2]


@pytest.mark.slow
def test_default_makes_its_pretrained_run_first_and_keeps_towers_frozen(tmp_path, capsys):
    config = _config("smoke", tmp_path)
    summary = train.train_and_evaluate(config, tmp_path / "scratch")
    assert "making it first" in capsys.readouterr().out
    for key in ("val/i2t_R@1", "val/t2i_R@1", "val/i2t_R@10", "test/t2i_median_rank"):
        assert 0.0 <= summary["metrics"][key] <= 24.0
    # The tokenizer travels with both runs, in the Hugging Face format, with the same ids.
    pre = tokenizer_lib.load_tokenizer(str(tmp_path / "pretrain" / "tokenizer"))
    own = tokenizer_lib.load_tokenizer(str(tmp_path / "scratch" / "tokenizer"))
    assert pre.get_vocab() == own.get_vocab()
    # Towers: loaded from the pre-training run and bit-identical after training; the new
    # projections were trained (and differ from the pre-trained ones).
    pretrained = checkpoint.read_variables(tmp_path / "pretrain", "best")[0]["params"]
    trained = checkpoint.read_variables(tmp_path / "scratch", "latest")[0]["params"]
    for tower in TOWERS:
        jax.tree.map(np.testing.assert_array_equal, pretrained[tower], trained[tower])
    assert not np.array_equal(pretrained["vision_proj"]["kernel"], trained["vision_proj"]["kernel"])


def test_frozen_towers_have_no_optimizer_state(tmp_path):
    exp = train.build_experiment(_config("smoke", tmp_path), workdir=tmp_path / "w")
    params = exp.abstract_state.params
    state_size = sum(x.size for x in jax.tree.leaves(exp.abstract_state.opt_state) if x.ndim)
    projections = sum(
        x.size for k in ("vision_proj", "text_proj") for x in jax.tree.leaves(params[k])
    )
    assert state_size == 2 * projections  # Adam's two moments, for the projections only


# ------------------------------------------------------ the faithful path
def _tiny_blip_folder(tmp_path, tiny_blip_config):
    """A random-weight BlipForImageTextRetrieval saved as published, with a tokenizer."""
    torch = pytest.importorskip("torch")
    from transformers import BlipForImageTextRetrieval

    corpus = ["a dog on a sofa", "two people riding horses", "a red bus in the street"] * 5
    folder = tmp_path / "blip"
    tokenizer = tokenizer_lib.train_wordpiece(corpus, 90, str(folder))
    torch.manual_seed(0)
    text_ids = dict(bos_token_id=2, eos_token_id=3, pad_token_id=0, sep_token_id=3)
    config = tiny_blip_config(len(tokenizer), 24, text_ids, image_text_hidden_size=16)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    return folder, len(tokenizer)


def _tiny_voc(tmp_path):
    ids = {
        "train": [f"2008_{i:06d}" for i in range(16)],
        "val": [f"2009_{i:06d}" for i in range(8)],
    }
    return write_tiny_voc(
        tmp_path, ids, lambda i, _: ["a dog on a sofa", "a red bus"][i % 2] + f" number {i}"
    )


@pytest.mark.slow
def test_voc_blip_preset_on_tiny_stand_ins(tmp_path, tiny_blip_config):
    folder, vocab = _tiny_blip_folder(tmp_path, tiny_blip_config)
    root, captions = _tiny_voc(tmp_path)
    config = _config("voc_blip,finetune,smoke", tmp_path)
    config.data.root, config.data.captions_json = str(root), str(captions)
    config.data.image_size = 16
    config.init_from.workdir = config.tokenizer.dir = str(folder)
    config.tokenizer.max_len = 12
    # The towers of the tiny HF folder (nested sub-configs, as config.model holds them).
    config.model.image.update(
        dict(image_size=16, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
    )
    text = dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
    config.model.text.update(text, vocab_size=vocab, max_position_embeddings=24)
    config.model.embed_dim = 16
    summary = train.train_and_evaluate(config, tmp_path / "run")
    assert summary["step"] == 6
    assert 0.0 <= summary["metrics"]["val/i2t_R@1"] <= 1.0
    published = init_from.read_init_source(
        "hf_blip", folder, "best", sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])
    )[0]["params"]
    trained = checkpoint.read_variables(tmp_path / "run", "latest")[0]["params"]
    flat_pub = flax.traverse_util.flatten_dict(published, sep="/")
    flat_new = flax.traverse_util.flatten_dict(trained, sep="/")
    assert set(flat_pub) == set(flat_new)
    for name, value in flat_pub.items():
        if name.startswith(TOWERS):  # frozen: still exactly the published weights
            np.testing.assert_array_equal(value, flat_new[name], err_msg=name)
    # fine-tuning started from the published projections (lr 1e-5 moves them only a little)
    np.testing.assert_allclose(
        flat_pub["vision_proj/kernel"], flat_new["vision_proj/kernel"], atol=1e-3
    )
