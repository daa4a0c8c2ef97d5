"""E7 retrieval: recall metrics on hand-made matrices, InfoNCE, devices, frozen towers, the
offline default's pre-training dependency, and the faithful BLIP path on tiny stand-ins."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from voc_stand_in import write_tiny_voc

from dllab_jax import checkpoint, parallel, train
from dllab_jax.config_utils import load_config
from dllab_jax.data import pipeline
from dllab_jax.data import tokenizer as tokenizer_lib
from dllab_jax.data.tokenizer import pick_one_caption
from dllab_jax.metrics import retrieval_metrics
from dllab_jax.tasks.retrieval import contrastive_loss

TOWERS = ("vision_model", "text_encoder")


# ---------------------------------------------------------------- metrics
def test_recall_on_a_perfect_and_a_constant_matrix():
    perfect = retrieval_metrics(np.eye(4), np.arange(4))
    assert perfect["i2t_R@1"] == perfect["t2i_R@1"] == 1.0
    assert perfect["i2t_mean_rank"] == perfect["t2i_median_rank"] == 1.0
    # All scores equal: ties count against the model, so nothing is found at rank 1.
    constant = retrieval_metrics(np.zeros((4, 4)), np.arange(4))
    assert constant["i2t_R@1"] == constant["t2i_R@1"] == 0.0
    assert constant["t2i_mean_rank"] == 4.0


def test_recall_with_several_captions_per_image():
    # 3 images, 5 captions: captions 0,1 -> image 0; 2,3 -> image 1; 4 -> image 2.
    caption_image = np.array([0, 0, 1, 1, 2])
    similarity = np.array(
        [
            [0.9, 0.1, 0.8, 0.0, 0.3],  # image 0: own captions 0.9, 0.1 -> best ranks 1st
            [0.7, 0.5, 0.1, 0.4, 0.6],  # image 1: own 0.1, 0.4 -> best ranks 4th
            [0.2, 0.5, 0.3, 0.4, 0.1],  # image 2: own 0.1 -> ranks 5th
        ]
    )
    out = retrieval_metrics(similarity, caption_image, ks=(1, 4))
    # i2t ranks: [1, 4, 5]
    assert out["i2t_R@1"] == pytest.approx(1 / 3)
    assert out["i2t_R@4"] == pytest.approx(2 / 3)
    assert out["i2t_mean_rank"] == pytest.approx(10 / 3)
    # t2i ranks, column by column (ties count against): c0 -> 1; c1 (0.1 vs 0.5, 0.5) -> 3;
    # c2 (0.1 vs 0.8, 0.3) -> 3; c3 (0.4 tied with 0.4) -> 2; c4 (0.1 vs 0.3, 0.6) -> 3
    assert out["t2i_R@1"] == pytest.approx(1 / 5)
    assert out["t2i_R@4"] == 1.0
    assert out["t2i_median_rank"] == 3.0
    assert out["t2i_mean_rank"] == pytest.approx(12 / 5)
    assert out["mean_R@1"] == pytest.approx((1 / 3 + 1 / 5) / 2)


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
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def test_one_and_four_devices_give_the_same_contrastive_loss(tmp_path):
    devices = jax.devices()
    losses = {}
    for n in (1, 4):
        config = _config("pretrain,smoke", tmp_path)
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
def _tiny_blip_folder(tmp_path):
    """A random-weight BlipForImageTextRetrieval saved as published, with a tokenizer."""
    torch = pytest.importorskip("torch")
    from transformers import BlipConfig, BlipForImageTextRetrieval

    corpus = ["a dog on a sofa", "two people riding horses", "a red bus in the street"] * 5
    folder = tmp_path / "blip"
    tokenizer = tokenizer_lib.train_wordpiece(corpus, 90, str(folder))
    torch.manual_seed(0)
    config = BlipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=24,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
            sep_token_id=3,
        ),
        image_text_hidden_size=16,
    )
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


def test_voc_blip_preset_on_tiny_stand_ins(tmp_path):
    folder, vocab = _tiny_blip_folder(tmp_path)
    root, captions = _tiny_voc(tmp_path)
    config = _config("voc_blip,finetune,smoke", tmp_path)
    config.data.root, config.data.captions_json = str(root), str(captions)
    config.data.image_size = 16
    config.init_from.workdir = config.tokenizer.dir = str(folder)
    config.tokenizer.max_len = 12
    sizes = dict(
        image_size=16,
        patch_size=8,
        vision_hidden_size=32,
        vision_layers=2,
        vision_heads=2,
        vision_mlp_dim=64,
        vocab_size=vocab,
        text_hidden_size=32,
        text_layers=2,
        text_heads=2,
        text_mlp_dim=64,
        max_text_len=24,
        embed_dim=16,
    )
    for key, value in sizes.items():
        config.model[key] = value
    summary = train.train_and_evaluate(config, tmp_path / "run")
    assert summary["step"] == 6
    assert 0.0 <= summary["metrics"]["val/i2t_R@1"] <= 1.0
    published = checkpoint.read_init_source(
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
