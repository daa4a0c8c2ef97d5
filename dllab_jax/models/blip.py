"""BLIP's two encoders (ViT image tower, BERT text tower) and the retrieval `TwoTower` model.

Layer for layer as Hugging Face transformers' `BlipVisionModel` and `BlipTextModel` (BLIP,
Li et al. 2022), so that the published checkpoints load by renaming (`blip_import.py`) and
give the same numbers. Parameter names mirror the HF state dict: HF's
`text_encoder.encoder.layer.3.attention.self.query.weight` is our
`text_encoder/encoder/layer_3/attention/self/query/kernel` (transposed). That is why some
names are HF's odd ones (`self`, `LayerNorm`, `post_layernorm`): a freezing regex or a
prefix-based loader written against either naming works on both.

Numerics follow HF: the vision tower is pre-LN with LayerNorm epsilon 1e-5, the text tower
is BERT post-LN with epsilon 1e-12, both use the exact (erf) GELU (HF's `hidden_act="gelu"`),
attention is softmax(q k^T / sqrt(d_head)) with dropout on the attention weights.

`TwoTower` (registry name `two_tower`) is BLIP's image-text contrastive pair (BLIP's ITC
head): the CLS token of each tower -> a linear projection (`vision_proj`, `text_proj`) -> L2
normalisation, plus a temperature that is a fixed number or a learned log-parameter. The
same module at `TWO_TOWER_SIZES["tiny"]` trains from scratch on CPU; at `"blip_base"` it
holds the published BLIP ViT-B/16 (384 px) + BERT-base weights.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dllab_jax import registry

# BLIP normalises images with CLIP's per-channel statistics (HF `BlipImageProcessor`).
BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# BERT's init (HF `initializer_range=0.02`) for every Dense, embedding and token parameter:
# pretrained BLIP was trained from it, and the tiny models train well from it.
_INIT = nn.initializers.truncated_normal(stddev=0.02)

# Two sizes of `TwoTower`; `TwoTower(**TWO_TOWER_SIZES["tiny"])` or, in a config,
# `config.model.update(TWO_TOWER_SIZES["tiny"])`.
TWO_TOWER_SIZES: dict[str, dict[str, Any]] = {
    # 32x32 images in 8x8 = 64 patches of 4x4; 2,375,488 parameters at vocab 1024 (1.8M in
    # the vision tower). vocab_size must match the tokenizer: configs set it.
    "tiny": dict(
        image_size=32,
        patch_size=4,
        vision_hidden_size=192,
        vision_layers=4,
        vision_heads=3,
        vision_mlp_dim=768,
        vision_layer_norm_eps=1e-5,
        vocab_size=1024,
        text_hidden_size=128,
        text_layers=2,
        text_heads=2,
        text_mlp_dim=512,
        max_text_len=35,
        text_layer_norm_eps=1e-12,
        embed_dim=128,
    ),
    # BLIP retrieval base (HF `Salesforce/blip-itm-base-coco`): ViT-B/16 at 384 px + BERT-base;
    # 195,375,872 parameters (the checkpoint's ITM cross-attention and head are not used).
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
        embed_dim=256,
    ),
}


def _attention(
    module: nn.Module,
    q: jnp.ndarray,
    k: jnp.ndarray,
    v: jnp.ndarray,
    mask: jnp.ndarray | None,
    *,
    num_heads: int,
    dropout_rate: float,
    train: bool,
    dtype: Any,
) -> jnp.ndarray:
    """Multi-head scaled dot-product attention on already projected q, k, v.

    Args:
      module: the calling module (supplies the 'dropout' rng when training).
      q: [B, Lq, D] queries.
      k: [B, Lk, D] keys.
      v: [B, Lk, D] values.
      mask: bool, broadcastable to [B, num_heads, Lq, Lk]; True = may attend. None = all.
      num_heads: heads; each gets D / num_heads features.
      dropout_rate: dropout on the attention weights.
      train: apply dropout.
      dtype: compute dtype (the softmax runs in float32 regardless).

    Returns:
      [B, Lq, D], heads concatenated in order (HF's layout, so the output Dense matches).
    """
    split = lambda x: x.reshape(*x.shape[:2], num_heads, x.shape[-1] // num_heads)
    deterministic = not train or dropout_rate == 0.0
    out = nn.dot_product_attention(
        split(q),
        split(k),
        split(v),
        mask=mask,
        # torch drops attention weights independently per head and query, not broadcast.
        broadcast_dropout=False,
        dropout_rng=None if deterministic else module.make_rng("dropout"),
        dropout_rate=dropout_rate,
        deterministic=deterministic,
        dtype=dtype,
        force_fp32_for_softmax=True,
    )
    return out.reshape(*out.shape[:2], -1)


# ----------------------------------------------------------------------------------------
# Vision tower (HF BlipVisionModel).


class _VisionEmbeddings(nn.Module):
    """Conv patch embedding, a class token in front, learned positions (HF names)."""

    image_size: int
    patch_size: int
    hidden_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        """[B, H, W, 3] -> [B, 1 + N, D], N = (H/p)^2 patches row-major."""
        b, h, w, _ = images.shape
        if h != self.image_size or w != self.image_size:
            # The position table is sized for image_size; a silent broadcast would be wrong.
            raise ValueError(
                f"images are {h}x{w}, the model takes {self.image_size}x{self.image_size}"
            )
        p = self.patch_size
        x = nn.Conv(
            self.hidden_size,
            kernel_size=(p, p),
            strides=(p, p),
            padding="VALID",
            dtype=self.dtype,
            name="patch_embedding",
        )(images)  # [B, H/p, W/p, D]
        x = x.reshape(b, -1, self.hidden_size)
        num_positions = 1 + (self.image_size // p) ** 2
        cls = self.param("class_embedding", _INIT, (1, 1, self.hidden_size))
        pos = self.param("position_embedding", _INIT, (1, num_positions, self.hidden_size))
        cls = jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.hidden_size))
        return jnp.concatenate([cls, x], axis=1) + pos.astype(x.dtype)


class _VisionSelfAttention(nn.Module):
    """Fused qkv Dense, attention, `projection` Dense (HF BlipAttention)."""

    num_heads: int
    attention_dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """[B, L, D] -> [B, L, D]."""
        d = x.shape[-1]
        qkv = nn.Dense(3 * d, dtype=self.dtype, kernel_init=_INIT, name="qkv")(x)
        # HF splits the fused output as (3, heads, head_dim): q, k, v are contiguous thirds.
        q, k, v = jnp.split(qkv, 3, axis=-1)
        y = _attention(
            self,
            q,
            k,
            v,
            None,
            num_heads=self.num_heads,
            dropout_rate=self.attention_dropout,
            train=train,
            dtype=self.dtype,
        )
        return nn.Dense(d, dtype=self.dtype, kernel_init=_INIT, name="projection")(y)


class _VisionMlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (HF BlipMLP)."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_INIT, name="fc1")(x)
        y = nn.gelu(y, approximate=False)  # HF hidden_act="gelu" is the erf form
        return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=_INIT, name="fc2")(y)


class BlipVisionLayer(nn.Module):
    """Pre-LN block: x + Drop(Attn(LN1(x))), then x + Drop(MLP(LN2(x))) (HF BlipEncoderLayer).

    Attributes:
      num_heads: attention heads.
      mlp_dim: width of the MLP's hidden layer.
      layer_norm_eps: LayerNorm epsilon.
      dropout: dropout on both residual branches (HF has none; 0 reproduces it).
      attention_dropout: dropout on the attention weights.
      dtype: compute dtype.
    """

    num_heads: int
    mlp_dim: int
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    attention_dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """[B, L, D] -> [B, L, D]."""
        norm = functools.partial(
            nn.LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype, use_fast_variance=False
        )
        drop = functools.partial(nn.Dropout(self.dropout), deterministic=not train)
        y = _VisionSelfAttention(
            self.num_heads, self.attention_dropout, dtype=self.dtype, name="self_attn"
        )(norm(name="layer_norm1")(x), train=train)
        x = x + drop(y)
        y = _VisionMlp(self.mlp_dim, dtype=self.dtype, name="mlp")(norm(name="layer_norm2")(x))
        return x + drop(y)


class _VisionLayers(nn.Module):
    """The stack of blocks, `layers_<i>` (HF `encoder.layers.<i>`)."""

    num_layers: int
    layer_kwargs: dict

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        for i in range(self.num_layers):
            x = BlipVisionLayer(**self.layer_kwargs, name=f"layers_{i}")(x, train=train)
        return x


class BlipVisionEncoder(nn.Module):
    """BLIP's ViT image encoder (HF `BlipVisionModel`), returning all tokens.

    Submodules: `embeddings` (`patch_embedding` Conv, `class_embedding`,
    `position_embedding`), `encoder/layers_<i>`, `post_layernorm`.

    Attributes:
      image_size: side of the square input images; sizes the position table.
      patch_size: side of a patch; the Conv's kernel and stride.
      hidden_size: token width D.
      num_layers: transformer blocks.
      num_heads: attention heads per block.
      mlp_dim: MLP hidden width (HF `intermediate_size`).
      layer_norm_eps: LayerNorm epsilon (BLIP: 1e-5).
      dropout: dropout on the residual branches (not in HF BLIP; keep 0 for its numbers).
      attention_dropout: dropout on the attention weights.
      dtype: compute dtype (parameters stay float32).
    """

    image_size: int = 32
    patch_size: int = 4
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 3
    mlp_dim: int = 768
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    attention_dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Encodes images.

        Args:
          images: [B, image_size, image_size, 3] float32, normalised with BLIP_MEAN/BLIP_STD.
          train: apply dropout.

        Returns:
          [B, 1 + N, hidden_size], HF's `last_hidden_state`: every token after
          `post_layernorm`, token 0 the class token, then N = (image_size/patch_size)^2
          patches row-major.
        """
        x = _VisionEmbeddings(
            self.image_size, self.patch_size, self.hidden_size, dtype=self.dtype, name="embeddings"
        )(images)
        layer_kwargs = dict(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            layer_norm_eps=self.layer_norm_eps,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            dtype=self.dtype,
        )
        x = _VisionLayers(self.num_layers, layer_kwargs, name="encoder")(x, train=train)
        return nn.LayerNorm(
            epsilon=self.layer_norm_eps,
            dtype=self.dtype,
            use_fast_variance=False,
            name="post_layernorm",
        )(x)


# ----------------------------------------------------------------------------------------
# Text tower (HF BlipTextModel, without its pooler).


class _TextEmbeddings(nn.Module):
    """Word + absolute position embeddings, LayerNorm, dropout (HF BlipTextEmbeddings)."""

    vocab_size: int
    hidden_size: int
    max_position_embeddings: int
    layer_norm_eps: float
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jnp.ndarray, *, train: bool, start=0) -> jnp.ndarray:
        """[B, L] int -> [B, L, D]; positions start..start+L-1 (start > 0 in cached decoding)."""
        length = input_ids.shape[1]
        if length > self.max_position_embeddings:
            # A gather past the table would clip silently to the last row.
            raise ValueError(
                f"text of {length} tokens is longer than the {self.max_position_embeddings} "
                "positions the model has"
            )
        embed = functools.partial(
            nn.Embed, features=self.hidden_size, dtype=self.dtype, embedding_init=_INIT
        )
        x = embed(self.vocab_size, name="word_embeddings")(input_ids)
        x = x + embed(self.max_position_embeddings, name="position_embeddings")(
            start + jnp.arange(length)[None]
        )
        x = nn.LayerNorm(
            epsilon=self.layer_norm_eps, dtype=self.dtype, use_fast_variance=False, name="LayerNorm"
        )(x)
        return nn.Dropout(self.dropout)(x, deterministic=not train)


class _TextOutput(nn.Module):
    """Dense -> dropout -> LayerNorm(. + residual): BERT's post-LN step (HF *Output)."""

    hidden_size: int
    layer_norm_eps: float
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, residual: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        y = nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=_INIT, name="dense")(x)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        return nn.LayerNorm(
            epsilon=self.layer_norm_eps, dtype=self.dtype, use_fast_variance=False, name="LayerNorm"
        )(y + residual)


class _TextQKV(nn.Module):
    """`query`, `key`, `value` Dense layers and attention (HF BlipTextSelfAttention).

    With `cache` set, keys and values live in the flax "cache" collection (see
    `BlipTextEncoder`'s `decode`): "self" appends this call's keys at `cache_start` to
    `cached_key`/`cached_value` [B, cache_length, D] and attends to the filled part; "cross"
    stores the keys/values of `context` as `cross_key`/`cross_value` [B, Lk, D] when a
    context is given and reuses them when it is None.
    """

    hidden_size: int
    num_heads: int
    attention_dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        context: jnp.ndarray | None,
        mask: jnp.ndarray | None,
        *,
        train: bool,
        cache: str | None = None,
        cache_start: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """Queries from x [B, L, D], keys/values from context [B, Lk, Dk] -> [B, L, D]."""
        dense = functools.partial(nn.Dense, self.hidden_size, dtype=self.dtype, kernel_init=_INIT)
        query = dense(name="query")(x)
        if cache == "cross" and context is None:
            key = self.get_variable("cache", "cross_key")
            value = self.get_variable("cache", "cross_value")
            if key is None:
                raise ValueError(
                    "no cached image keys: give encoder_hidden_states at the first step"
                )
        else:
            key, value = dense(name="key")(context), dense(name="value")(context)
        if cache == "cross" and context is not None:
            self.put_variable("cache", "cross_key", key)
            self.put_variable("cache", "cross_value", value)
        if cache == "self":
            # The first decode call (no cache yet) only allocates it, sized by its input.
            cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable(
                "cache", "cached_value", jnp.zeros, value.shape, value.dtype
            )
            if cache_start is not None:
                at = (0, cache_start, 0)
                key = jax.lax.dynamic_update_slice(cached_key.value, key, at)
                value = jax.lax.dynamic_update_slice(cached_value.value, value, at)
                cached_key.value, cached_value.value = key, value
                # Query t sits at position cache_start + t and sees every position up to it.
                positions = cache_start + jnp.arange(x.shape[1])
                mask = (jnp.arange(key.shape[1])[None, :] <= positions[:, None])[None, None]
        return _attention(
            self,
            query,
            key,
            value,
            mask,
            num_heads=self.num_heads,
            dropout_rate=self.attention_dropout,
            train=train,
            dtype=self.dtype,
        )


class _TextAttention(nn.Module):
    """Attention `self` + post-LN `output` (HF BlipTextAttention), self or cross."""

    hidden_size: int
    num_heads: int
    layer_norm_eps: float
    dropout: float
    attention_dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        context: jnp.ndarray | None,
        mask: jnp.ndarray | None,
        *,
        train: bool,
        cache: str | None = None,
        cache_start: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        y = _TextQKV(
            self.hidden_size, self.num_heads, self.attention_dropout, dtype=self.dtype, name="self"
        )(x, context, mask, train=train, cache=cache, cache_start=cache_start)
        return _TextOutput(
            self.hidden_size, self.layer_norm_eps, self.dropout, dtype=self.dtype, name="output"
        )(y, x, train=train)


class _TextIntermediate(nn.Module):
    """Dense -> exact GELU (HF BlipTextIntermediate)."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_INIT, name="dense")(x)
        return nn.gelu(y, approximate=False)


class BlipTextLayer(nn.Module):
    """BERT layer: self-attention, optional cross-attention, GELU MLP; each post-LN.

    Submodules (HF names): `attention`, `crossattention` (only with `cross_attention`),
    `intermediate/dense`, `output` (`dense`, `LayerNorm`).

    Attributes:
      hidden_size: token width D.
      num_heads: attention heads (self and cross).
      mlp_dim: MLP hidden width (HF `intermediate_size`).
      layer_norm_eps: LayerNorm epsilon (BERT: 1e-12).
      dropout: dropout after each Dense that feeds a residual (HF `hidden_dropout_prob`).
      attention_dropout: dropout on attention weights (HF `attention_probs_dropout_prob`).
      cross_attention: build the cross-attention block (the captioning decoder).
      dtype: compute dtype.
    """

    hidden_size: int
    num_heads: int
    mlp_dim: int
    layer_norm_eps: float = 1e-12
    dropout: float = 0.0
    attention_dropout: float = 0.0
    cross_attention: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        self_mask: jnp.ndarray,
        encoder_hidden_states: jnp.ndarray | None = None,
        cross_mask: jnp.ndarray | None = None,
        *,
        train: bool = False,
        decode: bool = False,
        cache_start: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """[B, L, D] -> [B, L, D]; masks are bool [B, 1, L, L] and [B, 1, L, Lk] (or None).

        `decode` keeps keys/values in the "cache" collection (see `BlipTextEncoder`);
        `cache_start` is the position of x's first token, None on the allocating call.
        """
        attention = functools.partial(
            _TextAttention,
            self.hidden_size,
            self.num_heads,
            self.layer_norm_eps,
            self.dropout,
            self.attention_dropout,
            dtype=self.dtype,
        )
        x = attention(name="attention")(
            x,
            x,
            self_mask,
            train=train,
            cache="self" if decode else None,
            cache_start=cache_start,
        )
        if self.cross_attention:
            x = attention(name="crossattention")(
                x,
                encoder_hidden_states,
                cross_mask,
                train=train,
                cache="cross" if decode else None,
            )
        y = _TextIntermediate(self.mlp_dim, dtype=self.dtype, name="intermediate")(x)
        return _TextOutput(
            self.hidden_size, self.layer_norm_eps, self.dropout, dtype=self.dtype, name="output"
        )(y, x, train=train)


class _TextLayers(nn.Module):
    """The stack of layers, `layer_<i>` (HF `encoder.layer.<i>`)."""

    num_layers: int
    layer_kwargs: dict

    @nn.compact
    def __call__(
        self,
        x,
        self_mask,
        encoder_hidden_states,
        cross_mask,
        *,
        train: bool,
        decode: bool = False,
        cache_start=None,
    ):
        for i in range(self.num_layers):
            x = BlipTextLayer(**self.layer_kwargs, name=f"layer_{i}")(
                x,
                self_mask,
                encoder_hidden_states,
                cross_mask,
                train=train,
                decode=decode,
                cache_start=cache_start,
            )
        return x


class BlipTextEncoder(nn.Module):
    """BLIP's BERT text model (HF `BlipTextModel` without the pooler): encoder or decoder.

    Text-only (the retrieval text tower): bidirectional self-attention over the non-padding
    tokens. As the captioning decoder: `causal=True` (each token sees itself and earlier
    tokens) and `cross_attention=True` (each layer also attends to `encoder_hidden_states`,
    the image tokens), as HF's `BlipTextModel(..., encoder_hidden_states=..., is_decoder=True)`.

    Cached decoding (`decode=True`, causal only) keeps every layer's self-attention keys and
    values, the cross-attention keys/values of the image tokens and the next position
    (`cache_index`) in the flax "cache" collection, so each new token costs one position:
      1. allocate: call with `decode=True` on variables without "cache" and
         `mutable=["cache"]`; input_ids [B, cache_length] (zeros will do) and
         encoder_hidden_states [B, Lk, .] fix the cache's shapes. The call computes the
         ordinary forward and returns an empty cache (index 0, zero keys; use
         `jax.eval_shape` for its shapes without computing anything).
      2. step: call with `decode=True`, the cache and `mutable=["cache"]`; input_ids [B, T]
         are the next T tokens (the prompt first, then one token at a time) at positions
         cache_index..cache_index+T-1, attention_mask None (no padding inside the sequence).
         The first step gives encoder_hidden_states (their keys/values are cached), later
         steps give None.
    The hidden states equal the full forward's at the same positions.

    Submodules: `embeddings` (`word_embeddings`, `position_embeddings`, `LayerNorm`),
    `encoder/layer_<i>` (see `BlipTextLayer`).

    Attributes:
      vocab_size: rows of the word embedding.
      hidden_size: token width D.
      num_layers: BERT layers.
      num_heads: attention heads.
      mlp_dim: MLP hidden width (HF `intermediate_size`).
      max_position_embeddings: rows of the position table; the longest text the model takes.
      layer_norm_eps: LayerNorm epsilon (BERT: 1e-12).
      dropout: HF `hidden_dropout_prob` (embeddings and before every residual add).
      attention_dropout: HF `attention_probs_dropout_prob`.
      causal: mask attention to later tokens (decoder use).
      cross_attention: build cross-attention to `encoder_hidden_states` in every layer.
      encoder_hidden_size: width of `encoder_hidden_states` (the image tokens); used only
        with `cross_attention`, where the key/value Dense layers take it as input.
      dtype: compute dtype (parameters stay float32).
    """

    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    mlp_dim: int = 512
    max_position_embeddings: int = 35
    layer_norm_eps: float = 1e-12
    dropout: float = 0.0
    attention_dropout: float = 0.0
    causal: bool = False
    cross_attention: bool = False
    encoder_hidden_size: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray | None = None,
        encoder_hidden_states: jnp.ndarray | None = None,
        encoder_attention_mask: jnp.ndarray | None = None,
        *,
        train: bool = False,
        decode: bool = False,
    ) -> jnp.ndarray:
        """Encodes token ids.

        Args:
          input_ids: [B, L] int token ids.
          attention_mask: [B, L], 1 = token, 0 = padding (keys that nobody attends to);
            None = all tokens.
          encoder_hidden_states: [B, Lk, encoder_hidden_size]; required with
            `cross_attention`, refused without it.
          encoder_attention_mask: [B, Lk], 1 = attend; None = all.
          train: apply dropout.
          decode: cached decoding (see the class docstring); needs `causal` and
            `mutable=["cache"]`; encoder_hidden_states may then be None after the first step.

        Returns:
          [B, L, hidden_size], HF's `last_hidden_state` (padding positions included).
        """
        given = encoder_hidden_states is not None
        if self.cross_attention != given and not (decode and self.cross_attention):
            # Parameters exist only for the mode chosen at construction: say so, early.
            raise ValueError(
                "encoder_hidden_states must be given exactly when cross_attention=True "
                f"(cross_attention={self.cross_attention})"
            )
        b, length = input_ids.shape
        cache_start = None
        if decode:
            if not self.causal:
                raise ValueError("decode=True is for the causal decoder (causal=True)")
            allocated = self.has_variable("cache", "cache_index")
            index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
            if allocated:
                if attention_mask is not None:
                    raise ValueError("decode steps take no attention_mask (no padding in a step)")
                cache_start = index.value
                index.value = cache_start + length
        if attention_mask is None:
            attention_mask = jnp.ones((b, length), bool)
        self_mask = jnp.broadcast_to(
            attention_mask.astype(bool)[:, None, None, :], (b, 1, length, length)
        )
        if self.causal:
            self_mask = self_mask & jnp.tril(jnp.ones((length, length), bool))
        cross_mask = None
        if given:
            expected = self.encoder_hidden_size or self.hidden_size
            if encoder_hidden_states.shape[-1] != expected:
                raise ValueError(
                    f"encoder_hidden_states have width {encoder_hidden_states.shape[-1]}, "
                    f"encoder_hidden_size is {expected}"
                )
            if encoder_attention_mask is not None:
                cross_mask = encoder_attention_mask.astype(bool)[:, None, None, :]
        x = _TextEmbeddings(
            self.vocab_size,
            self.hidden_size,
            self.max_position_embeddings,
            self.layer_norm_eps,
            self.dropout,
            dtype=self.dtype,
            name="embeddings",
        )(input_ids, train=train, start=0 if cache_start is None else cache_start)
        layer_kwargs = dict(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            layer_norm_eps=self.layer_norm_eps,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            cross_attention=self.cross_attention,
            dtype=self.dtype,
        )
        return _TextLayers(self.num_layers, layer_kwargs, name="encoder")(
            x,
            self_mask,
            encoder_hidden_states,
            cross_mask,
            train=train,
            decode=decode,
            cache_start=cache_start,
        )


# ----------------------------------------------------------------------------------------
# The retrieval model.


def _l2_normalize(x: jnp.ndarray) -> jnp.ndarray:
    """x / max(||x||, 1e-12) along the last axis, as torch's F.normalize."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, 1e-12)


def vision_encoder_from_fields(model: nn.Module) -> BlipVisionEncoder:
    """The image tower of a BLIP model whose fields follow TwoTower's `vision_*` names."""
    return BlipVisionEncoder(
        image_size=model.image_size,
        patch_size=model.patch_size,
        hidden_size=model.vision_hidden_size,
        num_layers=model.vision_layers,
        num_heads=model.vision_heads,
        mlp_dim=model.vision_mlp_dim,
        layer_norm_eps=model.vision_layer_norm_eps,
        dropout=model.vision_dropout,
        attention_dropout=model.vision_attention_dropout,
        dtype=model.dtype,
    )


@registry.models.register("two_tower")
class TwoTower(nn.Module):
    """BLIP's image-text contrastive model: two towers, CLS -> projection -> L2 norm.

    Submodules (HF `BlipForImageTextRetrieval` names): `vision_model` (BlipVisionEncoder),
    `text_encoder` (BlipTextEncoder, text-only), `vision_proj`, `text_proj` (Dense to
    `embed_dim`), and with `learn_temperature` the scalar parameter `log_temperature`.
    Defaults are `TWO_TOWER_SIZES["tiny"]`.

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
      vocab_size: text vocabulary size (the tokenizer's).
      text_hidden_size: BERT token width.
      text_layers: BERT layers.
      text_heads: BERT attention heads.
      text_mlp_dim: BERT MLP hidden width.
      max_text_len: rows of the text position table (BLIP base: 512; tokenizers may cut
        shorter, e.g. 35).
      text_layer_norm_eps: BERT LayerNorm epsilon.
      text_dropout: BERT hidden dropout (BLIP: 0).
      text_attention_dropout: BERT attention-weight dropout (BLIP: 0).
      embed_dim: size E of the shared embedding space (BLIP: 256).
      init_temperature: the temperature tau (similarities are divided by it); the initial
        value when learned.
      learn_temperature: learn log(tau) as the parameter `log_temperature`; otherwise tau
        is the constant `init_temperature` and no parameter exists.
      frozen_encoders: run both encoders in inference mode behind `stop_gradient`, as when
        only the projections train (the handout): no backward pass through the towers.
      dtype: compute dtype (parameters stay float32; outputs are float32).
    """

    image_size: int = 32
    patch_size: int = 4
    vision_hidden_size: int = 192
    vision_layers: int = 4
    vision_heads: int = 3
    vision_mlp_dim: int = 768
    vision_layer_norm_eps: float = 1e-5
    vision_dropout: float = 0.0
    vision_attention_dropout: float = 0.0
    vocab_size: int = 1024
    text_hidden_size: int = 128
    text_layers: int = 2
    text_heads: int = 2
    text_mlp_dim: int = 512
    max_text_len: int = 35
    text_layer_norm_eps: float = 1e-12
    text_dropout: float = 0.0
    text_attention_dropout: float = 0.0
    embed_dim: int = 128
    init_temperature: float = 0.1
    learn_temperature: bool = False
    frozen_encoders: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        self.vision_model = vision_encoder_from_fields(self)
        self.text_encoder = BlipTextEncoder(
            vocab_size=self.vocab_size,
            hidden_size=self.text_hidden_size,
            num_layers=self.text_layers,
            num_heads=self.text_heads,
            mlp_dim=self.text_mlp_dim,
            max_position_embeddings=self.max_text_len,
            layer_norm_eps=self.text_layer_norm_eps,
            dropout=self.text_dropout,
            attention_dropout=self.text_attention_dropout,
            dtype=self.dtype,
        )
        self.vision_proj = nn.Dense(self.embed_dim, dtype=self.dtype, kernel_init=_INIT)
        self.text_proj = nn.Dense(self.embed_dim, dtype=self.dtype, kernel_init=_INIT)
        if self.learn_temperature:
            self.log_temperature = self.param(
                "log_temperature", nn.initializers.constant(math.log(self.init_temperature)), ()
            )

    def encode_image(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """[B, image_size, image_size, 3] normalised float32 -> [B, embed_dim] unit vectors."""
        tokens = self.vision_model(images, train=train and not self.frozen_encoders)
        return _l2_normalize(self.vision_proj(self._maybe_frozen(tokens[:, 0])).astype(jnp.float32))

    def encode_text(
        self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray, train: bool = False
    ) -> jnp.ndarray:
        """input_ids [B, L] int, attention_mask [B, L] (1 = token) -> [B, embed_dim] unit vectors.

        The output at the first token (BLIP's tokenizer puts [CLS] there) embeds the text.
        """
        tokens = self.text_encoder(
            input_ids, attention_mask, train=train and not self.frozen_encoders
        )
        return _l2_normalize(self.text_proj(self._maybe_frozen(tokens[:, 0])).astype(jnp.float32))

    def _maybe_frozen(self, features: jnp.ndarray) -> jnp.ndarray:
        return jax.lax.stop_gradient(features) if self.frozen_encoders else features

    def temperature(self) -> jnp.ndarray:
        """The scalar float32 temperature tau."""
        if self.learn_temperature:
            return jnp.exp(self.log_temperature)
        return jnp.asarray(self.init_temperature, jnp.float32)

    def __call__(
        self,
        images: jnp.ndarray,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray,
        *,
        train: bool = False,
    ) -> dict[str, jax.Array]:
        """Embeds a batch of images and a batch of texts (the two batch sizes may differ).

        Args:
          images: [B, image_size, image_size, 3] float32, normalised with BLIP_MEAN/BLIP_STD.
          input_ids: [B', L] int token ids, L <= max_text_len.
          attention_mask: [B', L], 1 = token, 0 = padding.
          train: apply dropout.

        Returns:
          {"image_embed": [B, E], "text_embed": [B', E] (float32, unit L2 norm),
           "temperature": scalar float32 tau}; logits are image_embed @ text_embed.T / tau.
        """
        return {
            "image_embed": self.encode_image(images, train=train),
            "text_embed": self.encode_text(input_ids, attention_mask, train=train),
            "temperature": self.temperature(),
        }
