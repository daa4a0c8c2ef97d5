"""BLIP's image captioner: the ViT image tower and a BERT decoder with an LM head.

Layer for layer as Hugging Face transformers' `BlipForConditionalGeneration` (BLIP, Li et al.
2022), so the published captioner (`Salesforce/blip-image-captioning-base`) loads by
renaming (`captioner_import.py`). Parameter names mirror the HF state dict:
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
`dllab_jax.decoding`). `CAPTIONER_SIZES["tiny"]` trains on CPU; `"blip_base"` holds BLIP's
ViT-B/16 at 384 px + BERT-base decoder.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dllab_jax import registry
from dllab_jax.models.blip import _INIT, BlipTextEncoder, vision_encoder_from_fields

# Two sizes of `BlipCaptioner`: `BlipCaptioner(**CAPTIONER_SIZES["tiny"])` or, in a config,
# `config.model.update(CAPTIONER_SIZES["tiny"])`.
CAPTIONER_SIZES: dict[str, dict[str, Any]] = {
    # 32x32 images in 8x8 = 64 patches of 4x4; the image tower has the sizes of the retrieval
    # pre-training (configs/retrieval.py:pretrain) so it loads from there by name.
    # 835,872 parameters at vocab 512 (vision 234,912; decoder 600,960).
    "tiny": dict(
        image_size=32,
        patch_size=4,
        vision_hidden_size=96,
        vision_layers=2,
        vision_heads=3,
        vision_mlp_dim=384,
        vision_layer_norm_eps=1e-5,
        vocab_size=512,
        text_hidden_size=128,
        text_layers=2,
        text_heads=4,
        text_mlp_dim=512,
        max_text_len=40,
        text_layer_norm_eps=1e-12,
    ),
    # BLIP captioning base (HF `Salesforce/blip-image-captioning-base`): ViT-B/16 at 384 px +
    # BERT-base decoder with cross-attention; 223,971,644 parameters (vision 86,090,496),
    # as PyTorch counts them (the tied LM head matrix once).
    "blip_base": dict(
        image_size=384,
        patch_size=16,
        vision_hidden_size=768,
        vision_layers=12,
        vision_heads=12,
        vision_mlp_dim=3072,
        vision_layer_norm_eps=1e-5,
        vocab_size=30524,
        text_hidden_size=768,
        text_layers=12,
        text_heads=12,
        text_mlp_dim=3072,
        max_text_len=512,
        text_layer_norm_eps=1e-12,
    ),
}


class _PredictionTransform(nn.Module):
    """dense -> exact GELU -> LayerNorm (HF BlipTextPredictionHeadTransform)."""

    hidden_size: int
    layer_norm_eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=_INIT, name="dense")(x)
        x = nn.gelu(x, approximate=False)
        return nn.LayerNorm(
            epsilon=self.layer_norm_eps, dtype=self.dtype, use_fast_variance=False, name="LayerNorm"
        )(x)


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


class _LMHead(nn.Module):
    """HF BlipTextOnlyMLMHead: a `predictions` submodule and nothing else (names only)."""

    hidden_size: int
    vocab_size: int
    layer_norm_eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, word_embeddings: jnp.ndarray) -> jnp.ndarray:
        return _LMPredictionHead(
            self.hidden_size,
            self.vocab_size,
            self.layer_norm_eps,
            dtype=self.dtype,
            name="predictions",
        )(x, word_embeddings)


class BlipTextDecoder(nn.Module):
    """BLIP's text decoder (HF `BlipTextLMHeadModel`): `bert` + the tied LM head `cls`.

    Attributes:
      vocab_size: rows of the word embedding = logits per position.
      hidden_size: token width D.
      num_layers: BERT layers.
      num_heads: attention heads (self and cross).
      mlp_dim: MLP hidden width.
      max_position_embeddings: rows of the position table; the longest sequence.
      layer_norm_eps: LayerNorm epsilon (BERT: 1e-12).
      dropout: HF `hidden_dropout_prob`.
      attention_dropout: HF `attention_probs_dropout_prob`.
      encoder_hidden_size: width of the image tokens the cross-attention reads.
      dtype: compute dtype (parameters stay float32; logits are float32).
    """

    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int = 512
    max_position_embeddings: int = 40
    layer_norm_eps: float = 1e-12
    dropout: float = 0.0
    attention_dropout: float = 0.0
    encoder_hidden_size: int = 96
    dtype: Any = jnp.float32

    def setup(self):
        self.bert = BlipTextEncoder(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            max_position_embeddings=self.max_position_embeddings,
            layer_norm_eps=self.layer_norm_eps,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            causal=True,
            cross_attention=True,
            encoder_hidden_size=self.encoder_hidden_size,
            dtype=self.dtype,
        )
        self.cls = _LMHead(self.hidden_size, self.vocab_size, self.layer_norm_eps, self.dtype)

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
class BlipCaptioner(nn.Module):
    """BLIP's captioner (HF `BlipForConditionalGeneration`): image tokens -> text decoder.

    Submodules (HF names): `vision_model` (BlipVisionEncoder), `text_decoder`
    (BlipTextDecoder: `bert`, `cls`). Defaults are `CAPTIONER_SIZES["tiny"]`.

    Attributes:
      image_size: side of the square input images.
      patch_size: side of a ViT patch.
      vision_hidden_size: ViT token width.
      vision_layers: ViT blocks.
      vision_heads: ViT attention heads.
      vision_mlp_dim: ViT MLP hidden width.
      vision_layer_norm_eps: ViT LayerNorm epsilon.
      vision_dropout: ViT residual dropout (BLIP: 0).
      vision_attention_dropout: ViT attention-weight dropout (BLIP: 0).
      vocab_size: text vocabulary size (the tokenizer's, [DEC] included).
      text_hidden_size: decoder token width.
      text_layers: decoder layers.
      text_heads: decoder attention heads.
      text_mlp_dim: decoder MLP hidden width.
      max_text_len: rows of the text position table: the longest sequence (prompt included)
        that can be trained on or decoded.
      text_layer_norm_eps: decoder LayerNorm epsilon.
      text_dropout: decoder hidden dropout (BLIP: 0).
      text_attention_dropout: decoder attention-weight dropout (BLIP: 0).
      frozen_vision: run the image tower in inference mode behind `stop_gradient` (when only
        the decoder trains: no backward pass through the tower).
      dtype: compute dtype (parameters stay float32; logits are float32).
    """

    image_size: int = 32
    patch_size: int = 4
    vision_hidden_size: int = 96
    vision_layers: int = 2
    vision_heads: int = 3
    vision_mlp_dim: int = 384
    vision_layer_norm_eps: float = 1e-5
    vision_dropout: float = 0.0
    vision_attention_dropout: float = 0.0
    vocab_size: int = 512
    text_hidden_size: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_mlp_dim: int = 512
    max_text_len: int = 40
    text_layer_norm_eps: float = 1e-12
    text_dropout: float = 0.0
    text_attention_dropout: float = 0.0
    frozen_vision: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        self.vision_model = vision_encoder_from_fields(self)
        self.text_decoder = BlipTextDecoder(
            vocab_size=self.vocab_size,
            hidden_size=self.text_hidden_size,
            num_layers=self.text_layers,
            num_heads=self.text_heads,
            mlp_dim=self.text_mlp_dim,
            max_position_embeddings=self.max_text_len,
            layer_norm_eps=self.text_layer_norm_eps,
            dropout=self.text_dropout,
            attention_dropout=self.text_attention_dropout,
            encoder_hidden_size=self.vision_hidden_size,
            dtype=self.dtype,
        )

    @property
    def num_image_tokens(self) -> int:
        """1 + (image_size / patch_size)^2: the class token and the patches."""
        return 1 + (self.image_size // self.patch_size) ** 2

    def encode_image(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Image tokens for the decoder's cross-attention.

        Args:
          images: [B, image_size, image_size, 3] float32, normalised with BLIP_MEAN/BLIP_STD.
          train: apply dropout (never with `frozen_vision`).

        Returns:
          [B, num_image_tokens, vision_hidden_size] (HF `image_embeds`).
        """
        tokens = self.vision_model(images, train=train and not self.frozen_vision)
        return jax.lax.stop_gradient(tokens) if self.frozen_vision else tokens

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
            "the model has (max_text_len)"
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
