"""BERT WordPiece tokenisation (dllab_jax/data/tokenizer.py): a vocabulary trained offline
or hand-written."""

from __future__ import annotations

import json
import re

import ml_collections
import numpy as np
import pytest

from dllab_jax import data
from dllab_jax.data import tokenizer
from dllab_jax.errors import UserError


def shapes_config(**overrides) -> ml_collections.ConfigDict:
    values = dict(name="captioned_shapes", seed=0, image_size=32, num_train=200, num_val=40)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_train_wordpiece_round_trip_and_tokenize(tmp_path):
    corpus = data.text_corpus(shapes_config(num_train=300))
    folder = str(tmp_path / "wordpiece")
    trained = tokenizer.train_wordpiece(corpus, 300, folder)
    loaded = tokenizer.load_tokenizer(folder)
    n = len(trained)
    assert n == len(loaded) <= 300
    ids = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
    assert trained.convert_tokens_to_ids(ids) == [0, 1, 2, 3, 4, n - 2, n - 1]
    assert loaded.convert_tokens_to_ids(ids) == [0, 1, 2, 3, 4, n - 2, n - 1]
    assert loaded.bos_token == "[DEC]" and loaded.enc_token_id == n - 1
    a = tokenizer.tokenize(trained, corpus, 35)
    b = tokenizer.tokenize(loaded, corpus, 35)
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert a["input_ids"].dtype == np.int32 and a["attention_mask"].dtype == np.int32
    # Whole words of the corpus are single tokens; case is folded.
    out = tokenizer.tokenize(loaded, ["A Small RED circle", "", " ".join(["a red circle"] * 9)], 8)
    assert out["input_ids"].shape == (3, 8)
    assert loaded.convert_ids_to_tokens(out["input_ids"][0].tolist()) == [
        "[CLS]",
        "a",
        "small",
        "red",
        "circle",
        "[SEP]",
        "[PAD]",
        "[PAD]",
    ]
    np.testing.assert_array_equal(out["attention_mask"][0], [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["input_ids"][1], [2, 3, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["attention_mask"][1], [1, 1, 0, 0, 0, 0, 0, 0])
    # Truncated: 6 word pieces, still ending in [SEP], no padding.
    assert loaded.convert_ids_to_tokens(out["input_ids"][2].tolist()) == [
        "[CLS]",
        "a",
        "red",
        "circle",
        "a",
        "red",
        "circle",
        "[SEP]",
    ]
    assert out["attention_mask"][2].all()
    with pytest.raises(UserError, match="vocab_size"):
        tokenizer.train_wordpiece(corpus, 20, str(tmp_path / "too_small"))


def test_load_hand_written_bert_vocab(tmp_path):
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle"]
    vocab += ["##s", "left", "of", "the", "."]
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = {"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 512}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = tokenizer.load_tokenizer(str(folder))
    assert len(loaded) == len(vocab) + 2
    assert loaded.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(vocab), len(vocab) + 1]
    assert loaded.bos_token_id == len(vocab) and loaded.pad_token_id == 0
    out = tokenizer.tokenize(loaded, ["A red Circles left of the circle."], 12)
    expected = [3, 6, 7, 8, 9, 10, 11, 12, 8, 13, 4, 0]
    np.testing.assert_array_equal(out["input_ids"][0], expected)
    np.testing.assert_array_equal(out["attention_mask"][0], [1] * 11 + [0])
    # Unknown words map to [UNK]; the added tokens are atomic.
    out = tokenizer.tokenize(loaded, ["[DEC] a zebra [ENC]"], 6)
    np.testing.assert_array_equal(out["input_ids"][0], [3, len(vocab), 6, 2, len(vocab) + 1, 4])
    with pytest.raises(UserError, match="nowhere"):
        tokenizer.load_tokenizer(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=re.escape("vocab.txt")):
        tokenizer.load_tokenizer(str(tmp_path / "empty"))


def test_tokenizer_for_run_trains_once_then_reads_its_folders(tmp_path):
    config = ml_collections.ConfigDict(dict(dir="", vocab_size=120))
    corpus_calls = []

    def corpus():
        corpus_calls.append(1)
        return data.text_corpus(shapes_config(num_train=40))

    run = tmp_path / "run"
    trained = tokenizer.tokenizer_for_run(
        config, run, corpus, init_workdir=None, model_vocab_size=120
    )
    assert (run / "tokenizer").is_dir() and len(corpus_calls) == 1
    # Resumed: this run's own folder, no corpus needed.
    again = tokenizer.tokenizer_for_run(
        config, run, corpus, init_workdir=None, model_vocab_size=120
    )
    assert again.get_vocab() == trained.get_vocab() and len(corpus_calls) == 1
    # A fine-tuning run takes the tokenizer of the run it starts from.
    child = tokenizer.tokenizer_for_run(
        config, tmp_path / "child", corpus, init_workdir=str(run), model_vocab_size=120
    )
    assert child.get_vocab() == trained.get_vocab() and len(corpus_calls) == 1
    with pytest.raises(
        UserError, match=rf"has {len(trained)} tokens but config\.model\..*vocab_size is 20"
    ):
        tokenizer.tokenizer_for_run(config, run, corpus, init_workdir=None, model_vocab_size=20)
