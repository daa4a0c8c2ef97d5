"""What the image-text tasks share: captioned images, a run tokenizer, one caption a step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dllab_jax import data as data_lib
from dllab_jax.data import tokenizer as tokenizer_lib
from dllab_jax.data.tokenizer import TokenizedCaptions, pick_one_caption
from dllab_jax.tasks.base import Task


class ImageTextTask(Task):
    """Base of retrieval and captioning.

    Sources give `image` and `captions`; `prepare` resolves the run's tokenizer
    (`tokenizer.tokenizer_for_run`), every split is tokenised on read (with
    `caption_prefix()` in front of each caption), and each training step sees one random
    caption per image.
    """

    def caption_prefix(self) -> str:
        """Text put in front of every caption before tokenising (a captioning prompt)."""
        return ""

    def prepare(self, workdir: Path) -> None:
        self.tokenizer = tokenizer_lib.tokenizer_for_run(
            self.config.tokenizer,
            workdir,
            corpus=lambda: data_lib.text_corpus(self.config.data),
            init_workdir=self.config.init_from.workdir,
            model_vocab_size=self.config.model.text.vocab_size,
        )

    def source(self, split):
        if split not in self._sources:
            self._sources[split] = TokenizedCaptions(
                super().source(split),
                self.tokenizer,
                self.config.tokenizer.max_len,
                prefix=self.caption_prefix(),
            )
        return self._sources[split]

    def augment(self):
        return pick_one_caption

    def dummy_fields(self, batch_size, image_size):
        max_len = self.config.tokenizer.max_len
        return {
            "input_ids": np.zeros((batch_size, max_len), np.int32),
            "attention_mask": np.ones((batch_size, max_len), np.int32),
        }
