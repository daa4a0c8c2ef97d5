"""The batching pipeline (dllab_jax/data/pipeline.py), on hand-made cases."""

import itertools

import numpy as np
import pytest

from dllab_jax.data import ArraySource, SourceInfo, pipeline
from dllab_jax.errors import UserError


def _source(n=10):
    info = SourceInfo(num_classes=3, class_names=("a", "b", "c"), image_shape=(2, 2, 3))
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    return ArraySource({"image": images, "label": np.arange(n, dtype=np.int32) % 3}, info)


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
