"""E7 image-text retrieval: two towers, symmetric InfoNCE, Recall@K both ways.

Training batches hold one caption per image, drawn afresh each step among the image's
captions; evaluation embeds every image and every caption of a split and ranks on the full
similarity matrix (`evaluators.recall`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dllab_jax import parallel, registry
from dllab_jax.evaluators import recall
from dllab_jax.tasks.image_text import ImageTextTask


def contrastive_loss(
    image_embed: jnp.ndarray, text_embed: jnp.ndarray, temperature: jnp.ndarray
) -> tuple[jnp.ndarray, dict]:
    """Symmetric InfoNCE, (CE(I T^T / tau) + CE(T I^T / tau)) / 2, over the global batch.

    Under jit the batch is global, so on several devices every image is scored against every
    caption of the whole batch (XLA gathers the embeddings), as with one device.
    """
    logits = image_embed @ text_embed.T / temperature
    labels = jnp.arange(logits.shape[0])
    i2t = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    metrics = {
        "i2t_batch_accuracy": (logits.argmax(1) == labels).mean(),
        "t2i_batch_accuracy": (logits.argmax(0) == labels).mean(),
        "temperature": temperature,
    }
    return (i2t + t2i) / 2, metrics


@registry.tasks.register("retrieval")
class RetrievalTask(ImageTextTask):
    curve_metrics = ("loss", "i2t_R@1", "t2i_R@1")

    def init_inputs(self, batch):
        return (self.model_images(batch), batch["input_ids"], batch["attention_mask"])

    # -------------------------------------------------------------- training
    def loss(self, model, params, model_state, batch, rng):
        out = model.apply(
            {"params": params, **model_state},
            *self.init_inputs(batch),
            train=True,
            rngs={"dropout": rng},
        )
        loss, metrics = contrastive_loss(out["image_embed"], out["text_embed"], out["temperature"])
        return loss, (metrics, model_state)

    # ------------------------------------------------------------ evaluation
    @functools.cached_property
    def _embed(self):
        def embed(model, variables, batch):
            return model.apply(variables, *self.init_inputs(batch), train=False)

        return jax.jit(embed, static_argnums=0)

    def evaluate(self, model, variables, split, batches, place):
        """Embeds every image and caption of the split, then ranks on the full matrix
        (`evaluators.recall`); the artifacts add the texts and images of the top matches."""
        image_embeds, text_embeds, caption_image = [], [], []
        num_images = 0
        for batch in batches:
            real = int(batch["batch_mask"].sum())
            n, k, max_len = batch["input_ids"].shape
            flat = {
                "image": batch["image"],
                "input_ids": batch["input_ids"].reshape(n * k, max_len),
                "attention_mask": batch["attention_mask"].reshape(n * k, max_len),
            }
            out = parallel.to_host(self._embed(model, variables, place(flat)))
            image_embeds.append(out["image_embed"][:real])
            valid = batch["caption_mask"][:real].reshape(-1) > 0
            text_embeds.append(out["text_embed"][: real * k][valid])
            caption_image.append((num_images + np.arange(real * k) // k)[valid])
            num_images += real
        evaluation = recall.finalize(
            np.concatenate(image_embeds), np.concatenate(text_embeds), np.concatenate(caption_image)
        )
        evaluation.artifacts.update(self._top_examples(split, evaluation.artifacts))
        return evaluation

    def _top_examples(self, split, artifacts) -> dict:
        """{captions: the query texts, images: [queries][TOP_K] uint8 images} of `top_images`."""
        source = self.source(split)
        per_image = source.captions(np.arange(len(source))).reshape(-1)
        flat_captions = per_image[per_image != ""]
        ids = np.unique(artifacts["top"])
        lookup = dict(zip(ids.tolist(), source.source.get(ids)["image"], strict=True))
        return {
            "captions": [str(flat_captions[q]) for q in artifacts["queries"]],
            "images": [[lookup[int(i)] for i in row] for row in artifacts["top"]],
        }

    # ---------------------------------------------------------------- report
    def report(self, split_artifacts, run_artifacts, workdir):
        """For a few validation captions, the top-5 images (the true one framed green)."""
        from dllab_jax import plots

        if "val" in split_artifacts:
            artifacts = split_artifacts["val"]
            plots.retrieval_examples(
                artifacts["captions"],
                artifacts["images"],
                artifacts["correct"].tolist(),
                Path(workdir) / "retrieval_val.png",
            )
