"""BERT WordPiece tokenisation as BLIP uses it, through `transformers` and `tokenizers`.

BLIP's text towers use bert-base-uncased's vocabulary (30522 entries) plus two added special
tokens: '[DEC]' (the decoder's beginning of sequence, `bos_token`) and '[ENC]' (replaces
[CLS] when the text encoder attends to the image), 30524 ids in all. `load_tokenizer` reads
such a folder (adding the two tokens where they are missing, as BLIP's `init_tokenizer`
does); `train_wordpiece` trains a small vocabulary of the same form offline, e.g. on the
captions of `captioned_shapes`. All of it runs offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import transformers
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

from dllab_jax.data.augment import BatchRows, takes_rows
from dllab_jax.data.base import Source
from dllab_jax.errors import UserError

# BERT's special tokens in id order: [PAD] must be 0 (BLIP masks padding by id 0).
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
DEC_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"
# BLIP's text encoder for retrieval reads at most 35 tokens.
RETRIEVAL_MAX_LEN = 35


def _known(tokenizer: transformers.BertTokenizerFast, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def _add_blip_tokens(tokenizer: transformers.BertTokenizerFast) -> None:
    """Adds [DEC] as bos_token and [ENC] as an additional special token where missing, as
    BLIP's `init_tokenizer` does, and sets `enc_token_id` as BLIP does."""
    if tokenizer.bos_token != DEC_TOKEN or not _known(tokenizer, DEC_TOKEN):
        tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    if not _known(tokenizer, ENC_TOKEN):
        tokenizer.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
    tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids(ENC_TOKEN)


def load_tokenizer(folder: str) -> transformers.BertTokenizerFast:
    """A lower-casing BERT WordPiece tokenizer from a local folder, with BLIP's [DEC] and [ENC].

    Args:
      folder: a Hugging Face tokenizer folder: `vocab.txt` (one token per line, the line
        number is the id) and/or `tokenizer.json`, optionally `tokenizer_config.json` and
        `special_tokens_map.json` (BLIP's published folder, bert-base-uncased's, or one written
        by `train_wordpiece`). Nothing is downloaded.

    Returns:
      The tokenizer. If the folder lacks [DEC] / [ENC] they are added after the vocabulary
      (ids len(vocab) and len(vocab) + 1 when both are missing); `len(tokenizer)` is then
      the text model's vocabulary size (30524 for BLIP). `tokenizer.enc_token_id` is set.
    """
    folder = os.path.expanduser(str(folder))
    if not os.path.isdir(folder):
        raise UserError(f"tokenizer folder {folder} does not exist")
    if not any(os.path.isfile(os.path.join(folder, f)) for f in ("vocab.txt", "tokenizer.json")):
        raise UserError(
            f"tokenizer folder {folder} has neither vocab.txt nor tokenizer.json; point it at a "
            "BERT tokenizer folder (e.g. BLIP's or bert-base-uncased's)"
        )
    try:
        tokenizer = transformers.BertTokenizerFast.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the tokenizer in {folder}: {error}") from None
    _add_blip_tokens(tokenizer)
    return tokenizer


def train_wordpiece(
    texts: Iterable[str], vocab_size: int, folder: str
) -> transformers.BertTokenizerFast:
    """Trains a lower-casing BERT WordPiece tokenizer, saves it to `folder`, and returns it.

    The ids are BERT's layout: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, then the learnt
    WordPiece vocabulary (whole words and '##' continuations), then BLIP's [DEC] (bos_token)
    and [ENC] (additional special token) as added tokens.

    Args:
      texts: the training corpus, e.g. `data.text_corpus(data_config)`.
      vocab_size: the size of the whole vocabulary, [DEC] and [ENC] included, so every id is
        below it and a text model with `vocab_size` embeddings fits; a small corpus may give
        fewer ids (`len(tokenizer)` is the exact count).
      folder: where to write the tokenizer (`save_pretrained`); created if missing.
        `load_tokenizer(folder)` gives the same ids.

    Returns:
      The tokenizer as `load_tokenizer(folder)` reads it back.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 2 + 1:
        raise UserError(f"vocab_size must leave room for the special tokens, got {vocab_size}")
    # BERT's normaliser and pre-tokeniser, as BertTokenizerFast builds them for do_lower_case.
    model = Tokenizer(WordPiece(unk_token="[UNK]"))
    model.normalizer = normalizers.BertNormalizer(lowercase=True)
    model.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size - 2,  # room for [DEC] and [ENC]
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    model.train_from_iterator(texts, trainer=trainer)
    vocab = model.get_vocab()
    # Rebuild as transformers' BERT class, so the saved folder has BERT's post-processor
    # ([CLS] ... [SEP]) and config and loads like any BERT tokenizer folder.
    tokenizer = transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True)
    _add_blip_tokens(tokenizer)
    if len(tokenizer) > vocab_size:
        # The trainer keeps every character of the corpus (and its '##' form) whatever the
        # limit, so a tiny vocab_size can be exceeded.
        raise UserError(
            f"the corpus needs at least {len(tokenizer)} ids (its characters and the special "
            f"tokens), more than vocab_size={vocab_size}; raise the vocabulary size"
        )
    os.makedirs(folder, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return load_tokenizer(folder)


def tokenize(
    tokenizer: transformers.PreTrainedTokenizerBase, texts: Sequence[str], max_len: int
) -> dict[str, np.ndarray]:
    """Tokenises texts as BERT does: [CLS] text [SEP], padded with [PAD] and truncated.

    Args:
      tokenizer: from `load_tokenizer` or `train_wordpiece`.
      texts: n strings ('' gives [CLS] [SEP]).
      max_len: tokens per row, [CLS] and [SEP] included (BLIP's retrieval uses 35). A longer
        text is cut to max_len - 2 word pieces and still ends with [SEP].

    Returns:
      {'input_ids': [n, max_len] int32, 'attention_mask': [n, max_len] int32 (1 = token)}.
    """
    if max_len < 2:
        raise ValueError(f"max_len must leave room for [CLS] and [SEP], got {max_len}")
    if len(texts) == 0:
        empty = np.zeros((0, max_len), np.int32)
        return {"input_ids": empty, "attention_mask": empty.copy()}
    encoded = tokenizer(
        [str(t) for t in texts],
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_attention_mask=True,
        return_token_type_ids=False,
        return_tensors="np",
    )
    return {
        "input_ids": np.asarray(encoded["input_ids"], np.int32).reshape(len(texts), max_len),
        "attention_mask": np.asarray(encoded["attention_mask"], np.int32).reshape(
            len(texts), max_len
        ),
    }


RUN_TOKENIZER_DIR = "tokenizer"


def tokenizer_for_run(
    tokenizer_config,
    workdir,
    corpus: Callable[[], Iterable[str]],
    *,
    init_workdir: str | None,
    model_vocab_size: int,
) -> transformers.BertTokenizerFast:
    """The tokenizer of a text run, saved with it (`<workdir>/tokenizer`, HF format).

    Order: `tokenizer_config.dir` (`config.tokenizer.dir`); the tokenizer of the run at
    `init_workdir` (`config.init_from.workdir`: its text tower was trained with it); this
    run's own (resume); else a WordPiece of `tokenizer_config.vocab_size` trained on
    `corpus()` (called only then: the training texts, e.g. `data.text_corpus(config.data)`).
    Checks that a text model of `model_vocab_size` (`config.model.text.vocab_size`) holds it.
    """
    from pathlib import Path

    from absl import logging

    own = Path(workdir) / RUN_TOKENIZER_DIR
    candidates = [
        (tokenizer_config.dir, "config.tokenizer.dir"),
        (Path(init_workdir) / RUN_TOKENIZER_DIR if init_workdir else "", "the init_from run"),
        (own, "this run"),
    ]
    for folder, origin in candidates:
        if folder and Path(folder).is_dir():
            tokenizer = load_tokenizer(str(folder))
            logging.info("tokenizer from %s (%s)", folder, origin)
            break
    else:
        tokenizer = train_wordpiece(corpus(), tokenizer_config.vocab_size, str(own))
        print(f"trained a WordPiece tokenizer ({len(tokenizer)} tokens) -> {own}")
    if not own.is_dir():
        tokenizer.save_pretrained(str(own))
    if len(tokenizer) > model_vocab_size:
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens but config.model.text.vocab_size is "
            f"{model_vocab_size}; raise it to at least {len(tokenizer)}"
        )
    return tokenizer


class TokenizedCaptions:
    """A caption source with its captions tokenised on `get`.

    `get` returns `image`, the raw `captions` [n, K] (host only: for references and
    figures), `input_ids` and `attention_mask` [n, K, L] int32 and
    `caption_mask` [n, K] float32 (1 = a caption, 0 = an empty slot), where K is the
    source's captions per image and L the tokenizer's max length.
    """

    def __init__(self, source: Source, tokenizer, max_len: int, prefix: str = ""):
        """`prefix` is prepended to every caption before tokenising (a captioning prompt)."""
        self.source, self.tokenizer, self.max_len = source, tokenizer, max_len
        self.prefix = prefix
        self.info = source.info

    def __len__(self) -> int:
        return len(self.source)

    def get(self, indices) -> dict[str, np.ndarray]:
        batch = self.source.get(indices)
        captions = batch["captions"]  # kept (host only) for references and figures
        n, k = captions.shape
        texts = [self.prefix + c if c else "" for c in captions.reshape(-1)]
        tokens = tokenize(self.tokenizer, texts, self.max_len)
        batch["input_ids"] = tokens["input_ids"].reshape(n, k, self.max_len)
        batch["attention_mask"] = tokens["attention_mask"].reshape(n, k, self.max_len)
        batch["caption_mask"] = (captions != "").astype(np.float32)
        return batch

    def captions(self, indices) -> np.ndarray:
        """The raw caption strings [n, K] (for figures)."""
        return self.source.get(indices)["captions"]


@takes_rows
def pick_one_caption(batch: dict, rng: np.random.Generator, rows: BatchRows | None = None) -> dict:
    """Keeps one random caption per image: [n, K, L] -> [n, L] (a training transform).

    `rows`: the rows of a larger batch these images are (the draws are the whole batch's)."""
    mask = batch["caption_mask"]
    drawn = rng.random(mask.shape if rows is None else (rows.size, *mask.shape[1:]))
    scores = (drawn if rows is None else rows.of(drawn)) * mask
    choice = scores.argmax(axis=1)  # a random valid caption (every image has at least one)
    rows = np.arange(len(choice))
    drop = ("input_ids", "attention_mask", "caption_mask", "captions")
    out = {k: v for k, v in batch.items() if k not in drop}
    out["input_ids"] = batch["input_ids"][rows, choice]
    out["attention_mask"] = batch["attention_mask"][rows, choice]
    return out
