"""Metrics, the batching pipeline, optimisers and name-matched loading, on hand-made cases."""

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dllab_jax import checkpoint, metrics, optim
from dllab_jax.data import ArraySource, SourceInfo, pipeline
from dllab_jax.errors import UserError


def _source(n=10):
    info = SourceInfo(num_classes=3, class_names=("a", "b", "c"), image_shape=(2, 2, 3))
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    return ArraySource({"image": images, "label": np.arange(n, dtype=np.int32) % 3}, info)


# ------------------------------------------------------------------- metrics
def test_confusion_matrix_counts_weights_and_ignores_out_of_range_labels():
    labels = jnp.array([0, 0, 1, 2, 2, 255])
    predictions = jnp.array([0, 1, 1, 2, 0, 0])
    weights = jnp.array([1, 1, 1, 1, 0, 1])  # the 2->0 pair is padding
    confusion = metrics.confusion_matrix(labels, predictions, 3, weights)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])


def test_classification_metrics_on_a_hand_made_batch():
    # 3 real examples + 1 padding. Class 0: 1/2 right, class 1: 1/1 right.
    logits = jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8], [0.1, 0.9], [0.9, 0.1]]))
    labels = jnp.array([0, 0, 1, 1])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    sums = metrics.classification_sums(logits, labels, mask, 2)
    out = metrics.finalize_classification(sums)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["per_class_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    expected_loss = -(np.log(0.7) + np.log(0.2) + np.log(0.9)) / 3
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_sums_over_batches_equal_one_big_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(10, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 10)
    whole = metrics.classification_sums(logits, labels, np.ones(10), 4)
    parts = None
    for start in (0, 4, 8):  # 4 + 4 + 2 real of a padded 4
        idx = np.arange(start, start + 4) % 10
        mask = (np.arange(start, start + 4) < 10).astype(np.float32)
        parts = metrics.add_sums(
            parts, metrics.classification_sums(logits[idx], labels[idx], mask, 4)
        )
    a, b = metrics.finalize_classification(whole), metrics.finalize_classification(parts)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6)


def test_per_class_accuracy_skips_absent_classes():
    confusion = np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(metrics.per_class_accuracy(confusion)[:2], [1.0, 0.5])
    assert np.isnan(metrics.per_class_accuracy(confusion)[2])


# ------------------------------------------------------------------ pipeline
def test_eval_batches_pad_the_last_batch_and_mask_it():
    batches = list(pipeline.eval_batches(_source(10), 4))
    assert [b["image"].shape[0] for b in batches] == [4, 4, 4]
    np.testing.assert_array_equal(batches[-1]["batch_mask"], [1, 1, 0, 0])
    seen = np.concatenate([b["label"][b["batch_mask"] > 0] for b in batches])
    np.testing.assert_array_equal(seen, np.arange(10) % 3)
    assert pipeline.num_eval_batches(_source(10), 4) == 3
    assert len(list(pipeline.eval_batches(_source(10), 4, limit=5))) == 2


def test_train_batches_cover_each_epoch_and_resume_at_any_step():
    source = _source(10)
    run = list(itertools.islice(pipeline.train_batches(source, 3, seed=1), 9))
    first_epoch = np.concatenate([b["image"][:, 0, 0, 0] for b in run[:3]])
    assert len(set(first_epoch.tolist())) == 9  # 3 batches of 3 distinct examples, 1 dropped
    resumed = list(itertools.islice(pipeline.train_batches(source, 3, seed=1, start_step=5), 4))
    for a, b in zip(run[5:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    other = next(pipeline.train_batches(source, 3, seed=2))
    assert not np.array_equal(other["image"], run[0]["image"])


def test_train_batches_need_one_full_batch():
    with pytest.raises(UserError, match="fewer than one batch"):
        next(pipeline.train_batches(_source(2), 3, seed=0))


def test_prefetch_reraises_producer_errors():
    def broken():
        yield 1
        raise RuntimeError("boom")

    it = pipeline.prefetch(broken())
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="boom"):
        next(it)


# ---------------------------------------------------------------- optimisers
def _opt(**overrides):
    opt = dict(
        name="adamw",
        learning_rate=0.1,
        schedule="exponential",
        decay_rate=0.9,
        warmup_steps=0,
        weight_decay=0.01,
        amsgrad=True,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        momentum=0.9,
        nesterov=False,
        grad_clip_norm=0.0,
        trainable=".*",
    )
    opt.update(overrides)
    return ml_collections.ConfigDict(opt)


def test_adamw_amsgrad_with_epoch_decay_matches_torch():
    torch = pytest.importorskip("torch")
    w0 = np.array([1.0, -2.0, 3.0], np.float32)
    target = np.array([0.5, 0.5, -1.0], np.float32)
    steps_per_epoch, steps = 2, 7

    w = torch.tensor(w0, requires_grad=True)
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.01, amsgrad=True)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    for step in range(steps):
        opt.zero_grad()
        (((w - torch.tensor(target)) ** 2) * torch.arange(1, 4)).sum().backward()
        opt.step()
        if (step + 1) % steps_per_epoch == 0:
            sched.step()

    tx, schedule = optim.make_optimizer(
        _opt(), {"w": w0}, steps_per_epoch=steps_per_epoch, total_steps=steps
    )
    params = {"w": jnp.asarray(w0)}
    state = tx.init(params)
    grad_fn = jax.grad(lambda p: (((p["w"] - target) ** 2) * jnp.arange(1, 4)).sum())
    for _ in range(steps):
        updates, state = tx.update(grad_fn(params), state, params)
        params = jax.tree.map(jnp.add, params, updates)
    np.testing.assert_allclose(params["w"], w.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert float(schedule(5)) == pytest.approx(0.1 * 0.9**2)


def test_frozen_parameters_get_no_update_and_no_optimizer_state():
    params = {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
    tx, _ = optim.make_optimizer(
        _opt(trainable="head/.*"), params, steps_per_epoch=1, total_steps=1
    )
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    np.testing.assert_array_equal(updates["backbone"]["w"], 0.0)
    assert np.all(np.asarray(updates["head"]["w"]) != 0.0)
    # Moments (and the amsgrad maximum) exist for the 2 head values only.
    sizes = sum(x.size for x in jax.tree.leaves(state) if x.ndim > 0)
    assert sizes == 3 * 2


def test_trainable_regex_that_matches_nothing_is_an_error():
    with pytest.raises(UserError, match="matches no parameter"):
        optim.make_optimizer(
            _opt(trainable="decoder/.*"), {"w": jnp.ones(1)}, steps_per_epoch=1, total_steps=1
        )


def test_linear_schedule_decays_per_epoch_to_zero():
    _, schedule = optim.make_optimizer(
        _opt(schedule="linear", learning_rate=1.0),
        {"w": jnp.ones(1)},
        steps_per_epoch=10,
        total_steps=40,
    )
    assert [float(schedule(s)) for s in (0, 9, 10, 35)] == pytest.approx([1, 1, 0.75, 0.25])


# --------------------------------------------------------------- load by name
def test_load_by_name_copies_matching_names_and_respects_dont_load():
    target = {"backbone": {"w": jnp.zeros((2, 2))}, "head": {"w": jnp.zeros(3)}}
    source = {"backbone": {"w": jnp.ones((2, 2))}, "head": {"w": jnp.ones(5)}}
    merged, loaded = checkpoint.load_by_name(target, source, dont_load=("head/.*",))
    np.testing.assert_array_equal(merged["backbone"]["w"], 1.0)
    np.testing.assert_array_equal(merged["head"]["w"], 0.0)
    assert loaded == ["backbone/w"]


def test_load_by_name_with_prefixes():
    target = {"tower": {"enc": {"w": jnp.zeros(2)}}, "proj": {"w": jnp.zeros(2)}}
    source = {"encoder": {"enc": {"w": jnp.ones(2)}}}
    merged, _ = checkpoint.load_by_name(
        target, source, target_prefix="tower/", source_prefix="encoder/"
    )
    np.testing.assert_array_equal(merged["tower"]["enc"]["w"], 1.0)
    np.testing.assert_array_equal(merged["proj"]["w"], 0.0)


def test_load_by_name_fails_loudly_on_missing_names_and_shapes():
    target = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    with pytest.raises(UserError, match="'b' is not in the source"):
        checkpoint.load_by_name(target, {"a": jnp.ones(2)})
    with pytest.raises(UserError, match=r"shape \(2,\) here but \(3,\)"):
        checkpoint.load_by_name(target, {"a": jnp.ones(3), "b": jnp.ones(2)})
