"""What the image-text tasks share: captioned images, a run tokenizer, one caption a step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dllab_jax.data import tokenizer as tokenizer_lib
from dllab_jax.data.tokenizer import TokenizedCaptions, pick_one_caption
from dllab_jax.tasks.base import Task
from dllab_jax.tasks.classification import normalize_images


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
        self.tokenizer = tokenizer_lib.tokenizer_for_run(self.config, workdir)

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

    def dummy_batch(self, batch_size):
        height, width, channels = self.source("train").info.image_shape
        max_len = self.config.tokenizer.max_len
        return {
            "image": np.zeros((batch_size, height, width, channels), np.uint8),
            "input_ids": np.zeros((batch_size, max_len), np.int32),
            "attention_mask": np.ones((batch_size, max_len), np.int32),
        }

    def _images(self, batch):
        return normalize_images(batch["image"], self.config.data.mean, self.config.data.std)
