"""BLIP's image captioner: the ViT image tower and a BERT decoder with an LM head.

Layer for layer as Hugging Face transformers' `BlipForConditionalGeneration` (BLIP, Li et al.
2022), so the published captioner (`Salesforce/blip-image-captioning-base`) loads by
renaming (`dllab_jax.weights.hf_blip_captioner`). Parameter names mirror the HF state dict:
  vision_model/...                       HF vision_model.* (`BlipVisionEncoder`)
  text_decoder/bert/...                  HF text_decoder.bert.* (`BlipTextEncoder`, causal,
                                         with cross-attention to the image tokens)
  text_decoder/cls/predictions/transform/{dense, LayerNorm}, text_decoder/cls/predictions/bias
                                         HF text_decoder.cls.predictions.*
The LM head's output matrix is the word embedding, as in BLIP (HF ties
`cls.predictions.decoder.weight` to `bert.embeddings.word_embeddings.weight` and its bias to
`cls.predictions.bias`): logits = LN(GELU(dense(h))) @ word_embeddings^T + bias.

`BlipCaptioner` (registry name `blip_captioner`) gives the teacher-forced logits of a whole
sequence (`__call__`, for training) and a cached one-step decoder (`decode_step`, for
`dllab_jax.decoding`). The towers are `blip_vision.py`'s and `blip_text.py`'s, built from the
nested sub-configs `config.model.image` and `config.model.text`; `blip_sizes.CAPTIONER_SIZES`
has "tiny" (trains on CPU) and "blip_base" (BLIP's ViT-B/16 at 384 px + BERT-base decoder).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from dllab_jax import registry
from dllab_jax.models.blip_layers import INIT, layer_norm
from dllab_jax.models.blip_sizes import TEXT_SIZES, VISION_SIZES
from dllab_jax.models.blip_text import BlipTextEncoder
from dllab_jax.models.blip_vision import BlipVisionEncoder
from dllab_jax.models.layers import ComposedModule, stop_gradient_if


class _PredictionTransform(nn.Module):
    """dense -> exact GELU -> LayerNorm (HF BlipTextPredictionHeadTransform)."""

    hidden_size: int
    layer_norm_eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=INIT, name="dense")(x)
        x = nn.gelu(x, approximate=False)
        return layer_norm(self.layer_norm_eps, self.dtype, "LayerNorm")(x)


class _LMPredictionHead(nn.Module):
    """`transform`, then the tied output matrix and the `bias` (HF BlipTextLMPredictionHead)."""

    hidden_size: int
    vocab_size: int
    layer_norm_eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, word_embeddings: jnp.ndarray) -> jnp.ndarray:
        """x [B, L, D], word_embeddings [vocab, D] -> float32 logits [B, L, vocab]."""
        x = _PredictionTransform(
            self.hidden_size, self.layer_norm_eps, dtype=self.dtype, name="transform"
        )(x)
        bias = self.param("bias", nn.initializers.zeros, (self.vocab_size,))
        logits = jnp.einsum("bld,vd->blv", x, word_embeddings.astype(x.dtype))
        return logits.astype(jnp.float32) + bias


class _LMHead(_LMPredictionHead):
    """HF BlipTextOnlyMLMHead: a `predictions` submodule and nothing else (names only)."""

    @nn.compact
    def __call__(self, x: jnp.ndarray, word_embeddings: jnp.ndarray) -> jnp.ndarray:
        return _LMPredictionHead(
            self.hidden_size,
            self.vocab_size,
            self.layer_norm_eps,
            dtype=self.dtype,
            name="predictions",
        )(x, word_embeddings)


class BlipTextDecoder(ComposedModule):
    """BLIP's text decoder (HF `BlipTextLMHeadModel`): `bert` + the tied LM head `cls`.

    Attributes:
      text: the decoder's `BlipTextEncoder` arguments (vocab_size = logits per position,
        hidden_size, num_layers, num_heads (self and cross), mlp_dim,
        max_position_embeddings (the longest sequence), layer_norm_eps, dropout,
        attention_dropout); it is built causal, with cross-attention.
      encoder_hidden_size: width of the image tokens the cross-attention reads.
      dtype: compute dtype (parameters stay float32; logits are float32).
    """

    text: Mapping[str, Any] = FrozenDict(TEXT_SIZES["small_decoder"])
    encoder_hidden_size: int = 96
    dtype: Any = jnp.float32

    def setup(self):
        self.bert = BlipTextEncoder(
            **self.text,
            causal=True,
            cross_attention=True,
            encoder_hidden_size=self.encoder_hidden_size,
            dtype=self.dtype,
        )
        bert = self.bert
        self.cls = _LMHead(bert.hidden_size, bert.vocab_size, bert.layer_norm_eps, self.dtype)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray | None,
        encoder_hidden_states: jnp.ndarray | None,
        *,
        train: bool = False,
        decode: bool = False,
    ) -> jnp.ndarray:
        """input_ids [B, L] -> float32 logits [B, L, vocab] of the token after each position.

        Arguments as `BlipTextEncoder.__call__` (which documents `decode`).
        """
        hidden = self.bert(
            input_ids, attention_mask, encoder_hidden_states, train=train, decode=decode
        )
        word_embeddings = self.bert.variables["params"]["embeddings"]["word_embeddings"]
        return self.cls(hidden, word_embeddings["embedding"])


@registry.models.register("blip_captioner")
class BlipCaptioner(ComposedModule):
    """BLIP's captioner (HF `BlipForConditionalGeneration`): image tokens -> text decoder.

    Submodules (HF names): `vision_model` (BlipVisionEncoder), `text_decoder`
    (BlipTextDecoder: `bert`, `cls`). Defaults are `CAPTIONER_SIZES["tiny"]`.

    Attributes:
      image: the image tower's arguments (`BlipVisionEncoder`), e.g. `VISION_SIZES["small"]`.
      text: the decoder's arguments (`BlipTextDecoder.text`): vocab_size is the tokenizer's
        ([DEC] included); max_position_embeddings is the longest sequence (prompt included)
        that can be trained on or decoded.
      frozen: submodules (`vision_model`) that run in inference mode behind
        `stop_gradient` (when only the decoder trains: no backward pass through the tower).
        Not a config key: the training loop sets it from `config.optimizer.trainable`
        (`optim.with_frozen_submodules`).
      dtype: compute dtype (parameters stay float32; logits are float32).
    """

    image: Mapping[str, Any] = FrozenDict(VISION_SIZES["small"])
    text: Mapping[str, Any] = FrozenDict(TEXT_SIZES["small_decoder"])
    frozen: tuple[str, ...] = ()
    dtype: Any = jnp.float32

    def setup(self):
        self.vision_model = BlipVisionEncoder(**self.image, dtype=self.dtype)
        self.text_decoder = BlipTextDecoder(
            self.text, encoder_hidden_size=self.vision_model.hidden_size, dtype=self.dtype
        )

    @property
    def vision_hidden_size(self) -> int:
        """Width of the image tokens."""
        return BlipVisionEncoder(**self.image, parent=None).hidden_size

    @property
    def max_text_len(self) -> int:
        """Rows of the text position table: the longest sequence, prompt included."""
        return BlipTextEncoder(**self.text, parent=None).max_position_embeddings

    @property
    def num_image_tokens(self) -> int:
        """1 + (image_size / patch_size)^2: the class token and the patches."""
        vision = BlipVisionEncoder(**self.image, parent=None)
        return 1 + (vision.image_size // vision.patch_size) ** 2

    def encode_image(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Image tokens for the decoder's cross-attention.

        Args:
          images: [B, image_size, image_size, 3] float32, normalised with BLIP_MEAN/BLIP_STD.
          train: apply dropout (never in a frozen tower).

        Returns:
          [B, num_image_tokens, vision_hidden_size] (HF `image_embeds`).
        """
        frozen = "vision_model" in self.frozen
        tokens = self.vision_model(images, train=train and not frozen)
        return stop_gradient_if(frozen, tokens)

    def text_logits(
        self,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray | None,
        image_tokens: jnp.ndarray,
        train: bool = False,
    ) -> jnp.ndarray:
        """Teacher-forced logits given the image tokens (see `__call__`)."""
        return self.text_decoder(input_ids, attention_mask, image_tokens, train=train)

    def decode_step(
        self, input_ids: jnp.ndarray, image_tokens: jnp.ndarray | None = None
    ) -> jnp.ndarray:
        """Logits of the next T tokens with the key/value cache (apply with mutable=["cache"]).

        Args:
          input_ids: [B, T] int, the tokens at the cache's next T positions (the prompt at the
            first step, then one token at a time).
          image_tokens: [B, N, vision_hidden_size] at the first step (their cross-attention
            keys/values are cached), None afterwards.

        Returns:
          float32 logits [B, T, vocab]: row t predicts the token after input_ids[:, t]. Start
          from `init_cache(...)` as variables["cache"].
        """
        return self.text_decoder(input_ids, None, image_tokens, decode=True)

    def __call__(
        self,
        images: jnp.ndarray,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray,
        *,
        train: bool = False,
    ) -> jnp.ndarray:
        """Teacher-forced next-token logits (HF `BlipForConditionalGeneration(...).logits`).

        Args:
          images: [B, image_size, image_size, 3] float32, normalised with BLIP_MEAN/BLIP_STD.
          input_ids: [B, L] int, L <= max_text_len; [DEC] first (BLIP's bos), then the prompt,
            the caption and [SEP].
          attention_mask: [B, L], 1 = token, 0 = padding.
          train: apply dropout.

        Returns:
          float32 [B, L, vocab_size]; position t scores the token at t + 1.
        """
        image_tokens = self.encode_image(images, train=train)
        return self.text_logits(input_ids, attention_mask, image_tokens, train=train)


def init_cache(model: BlipCaptioner, batch_size: int, max_length: int) -> dict:
    """An empty key/value cache for `BlipCaptioner.decode_step` (zeros, position 0).

    Args:
      model: the captioner (only its sizes matter).
      batch_size: sequences decoded together (images x beams).
      max_length: positions the cache holds, prompt included (<= model.max_text_len).

    Returns:
      The "cache" collection: per decoder layer the self-attention keys/values
      [batch_size, max_length, D] and the image keys/values [batch_size, N, D], plus
      `cache_index`.
    """
    if max_length > model.max_text_len:
        raise ValueError(
            f"max_length {max_length} is more than the {model.max_text_len} text positions "
            "the model has (max_text_len: text.max_position_embeddings)"
        )
    ids = jnp.zeros((batch_size, max_length), jnp.int32)
    tokens = jnp.zeros((batch_size, model.num_image_tokens, model.vision_hidden_size), model.dtype)

    def allocate():
        # Allocating call: the decoder runs once at full length and leaves an empty cache.
        variables = model.init(jax.random.key(0), ids, tokens, method="decode_step")
        return variables["cache"]

    shapes = jax.eval_shape(allocate)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def reorder_cache(cache: dict, index: jnp.ndarray) -> dict:
    """The cache of sequences `index` [B'] (beam search), e.g. `cache[index]` per sequence.

    The image keys/values are left as they are: beam search only reorders beams of one
    image, whose image tokens are the same.
    """

    def take(path, x):
        name = getattr(path[-1], "key", "")
        if x.ndim == 0 or name.startswith("cross_"):
            return x
        return jnp.take(x, index, axis=0)

    return jax.tree_util.tree_map_with_path(take, cache)
