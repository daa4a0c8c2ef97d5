"""E6 image captioning: a BLIP-style captioner, teacher-forced LM loss, decoded BLEU.

Training text is `prompt + caption` (BLIP's "a picture of "), starting with [DEC] and ending
with [SEP]; the loss covers the caption tokens and [SEP], not the prompt. Evaluation decodes
every image of the split in one jitted program per batch (`dllab_jax.decoding`) with the
config's strategy and scores corpus BLEU-1..4 against all references of each image.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dllab_jax import decoding, parallel, registry
from dllab_jax import metrics as metrics_lib
from dllab_jax.data import tokenizer as tokenizer_lib
from dllab_jax.evaluators import Evaluation, bleu
from dllab_jax.tasks.image_text import ImageTextTask

# The `config.decoding` keys passed on to `decoding.decode` as they are.
DECODING_OPTIONS = (
    "strategy",
    "max_length",
    "min_length",
    "top_k",
    "top_p",
    "temperature",
    "num_beams",
)


@registry.tasks.register("captioning")
class CaptioningTask(ImageTextTask):
    curve_metrics = ("loss", "bleu4")

    # ------------------------------------------------------------- tokens
    def caption_prefix(self) -> str:
        return self.config.decoding.prompt

    def prepare(self, workdir: Path) -> None:
        super().prepare(workdir)
        self.bos_id = self.tokenizer.convert_tokens_to_ids(tokenizer_lib.DEC_TOKEN)
        self.eos_id = self.tokenizer.sep_token_id
        self.pad_id = self.tokenizer.pad_token_id
        # BLIP's prompt ids: [DEC] + the prompt's word pieces, without the closing [SEP].
        words = self.tokenizer(self.config.decoding.prompt, add_special_tokens=False)
        self.prompt_ids = np.asarray([self.bos_id, *words["input_ids"]], np.int32)
        # The prompt as the tokenizer writes it back (lower-cased), to strip from outputs.
        self.prompt_text = self.tokenizer.decode(words["input_ids"]).strip()

    def _decoder_inputs(self, batch):
        # The tokenizer starts with [CLS]; BLIP's decoder starts with [DEC] instead.
        return batch["input_ids"].at[:, 0].set(self.bos_id)

    def init_inputs(self, batch):
        ids = jnp.asarray(batch["input_ids"])
        return (
            self.model_images(batch),
            self._decoder_inputs({"input_ids": ids}),
            batch["attention_mask"],
        )

    # ------------------------------------------------------------ training
    def _token_losses(self, model, variables, batch, train, rng=None):
        """Per-token cross-entropy of the next token and the weights that count it."""
        ids = self._decoder_inputs(batch)
        logits = model.apply(
            variables,
            self.model_images(batch),
            ids,
            batch["attention_mask"],
            train=train,
            rngs={"dropout": rng} if train else None,
        )
        targets = ids[:, 1:]
        positions = jnp.arange(1, ids.shape[1])[None, :]
        # Count caption tokens and the closing [SEP]; the prompt is given, not predicted.
        weights = batch["attention_mask"][:, 1:] * (positions >= len(self.prompt_ids))
        num_classes = logits.shape[-1]
        labels = optax.smooth_labels(
            jax.nn.one_hot(targets, num_classes), self.config.label_smoothing
        )
        losses = optax.softmax_cross_entropy(logits[:, :-1].astype(jnp.float32), labels)
        correct = logits[:, :-1].argmax(-1) == targets
        return losses, correct, weights.astype(jnp.float32)

    def loss(self, model, params, model_state, batch, rng):
        losses, correct, weights = self._token_losses(
            model, {"params": params, **model_state}, batch, True, rng
        )
        total = jnp.maximum(weights.sum(), 1.0)
        metrics = {"token_accuracy": (correct * weights).sum() / total}
        return (losses * weights).sum() / total, (metrics, model_state)

    # ---------------------------------------------------------- evaluation
    def eval_step(self, model, variables, batch):
        """Teacher-forced loss sums over every caption of the real images (no outputs)."""
        n, k, max_len = batch["input_ids"].shape
        flat = {
            "image": jnp.repeat(batch["image"], k, axis=0),
            "input_ids": batch["input_ids"].reshape(n * k, max_len),
            "attention_mask": batch["attention_mask"].reshape(n * k, max_len),
        }
        losses, correct, weights = self._token_losses(model, variables, flat, False)
        weights = weights * (batch["caption_mask"] * batch["batch_mask"][:, None]).reshape(-1, 1)
        sums = {
            "loss_sum": (losses * weights).sum(),
            "correct": (correct * weights).sum(),
            "tokens": weights.sum(),
        }
        return sums, {}

    @functools.cached_property
    def _decode(self):
        cfg = self.config.decoding

        options = {name: cfg[name] for name in DECODING_OPTIONS}

        def run(model, variables, images, rng):
            return decoding.decode(
                model,
                variables,
                images,
                jnp.asarray(self.prompt_ids),
                **options,
                eos_id=self.eos_id,
                pad_id=self.pad_id,
                rng=rng,
            )

        return jax.jit(run, static_argnums=0)

    def generate(self, model, variables, images_uint8, place, rng) -> list[str]:
        """Captions for a batch of uint8 images, prompt stripped."""
        images = place({"image": images_uint8})["image"]
        tokens, _ = self._decode(model, variables, self.model_images({"image": images}), rng)
        texts = self.tokenizer.batch_decode(parallel.to_host(tokens), skip_special_tokens=True)
        return [self._strip_prompt(t) for t in texts]

    def _strip_prompt(self, text: str) -> str:
        text = text.strip()
        if self.prompt_text and text.lower().startswith(self.prompt_text.lower()):
            text = text[len(self.prompt_text) :]
        return text.strip()

    def evaluate(self, model, variables, split, batches, place):
        """Teacher-forced loss and token accuracy, and BLEU of the decoded captions
        (`evaluators.bleu`); the artifacts are the captions and the first 16 images."""
        sums, hypotheses, references, images = None, [], [], []
        rng = jax.random.key(self.config.decoding.seed)
        # Decoding speed is timed after the first batch, which also compiles the decoder.
        timing = {"first": [0.0, 0], "rest": [0.0, 0]}
        for index, batch in enumerate(batches):
            real = int(batch["batch_mask"].sum())
            device_batch = place({k: v for k, v in batch.items() if k != "captions"})
            sums = metrics_lib.add_sums(
                sums, self._jitted_eval_step(model, variables, device_batch)[0]
            )
            start = time.perf_counter()
            texts = self.generate(
                model, variables, batch["image"], place, jax.random.fold_in(rng, index)
            )
            part = timing["rest" if index else "first"]
            part[0] += time.perf_counter() - start
            part[1] += len(texts)
            hypotheses += texts[:real]
            references += [[c for c in row if c] for row in batch["captions"][:real]]
            images.append(batch["image"][:real])
        sums = jax.device_get(sums)
        decode_time, decoded = timing["rest"] if timing["rest"][1] else timing["first"]
        scores = bleu.finalize(hypotheses, references)
        metrics = {
            "loss": float(sums["loss_sum"]) / max(float(sums["tokens"]), 1.0),
            "token_accuracy": float(sums["correct"]) / max(float(sums["tokens"]), 1.0),
            **scores.metrics,
            "captions_per_s": decoded / max(decode_time, 1e-9),  # detokenising included
        }
        artifacts = {**scores.artifacts, "images": np.concatenate(images)[:16]}
        return Evaluation(metrics, artifacts)

    # -------------------------------------------------------------- report
    def report(self, split_artifacts, run_artifacts, workdir):
        """Images of the validation split with their generated (G) and reference (R)
        captions."""
        from dllab_jax import plots

        if "val" in split_artifacts:
            artifacts = split_artifacts["val"]
            plots.captioned_images(
                artifacts["images"][:8],
                artifacts["hypotheses"][:8],
                [refs[0] for refs in artifacts["references"][:8]],
                Path(workdir) / "captions_val.png",
            )
