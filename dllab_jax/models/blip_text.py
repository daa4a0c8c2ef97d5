"""BLIP's text tower: BERT, layer for layer as Hugging Face's `BlipTextModel` (no pooler).

The same module is the retrieval text encoder (bidirectional, text only) and the captioning
decoder's `bert` (causal, with cross-attention to the image tokens, and a key/value cache for
decoding). Parameter names mirror the HF state dict: HF's
`text_encoder.encoder.layer.3.attention.self.query.weight` is our
`text_encoder/encoder/layer_3/attention/self/query/kernel` (transposed); hence HF's odd names
(`self`, `LayerNorm`). Post-LN layers with LayerNorm epsilon 1e-12, the exact (erf) GELU.
Built from `config.model.text` (a dict of `BlipTextEncoder`'s size arguments; sizes in
`blip_sizes.TEXT_SIZES`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dllab_jax.models.blip_layers import INIT, TextQKV, layer_norm


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
            nn.Embed, features=self.hidden_size, dtype=self.dtype, embedding_init=INIT
        )
        x = embed(self.vocab_size, name="word_embeddings")(input_ids)
        x = x + embed(self.max_position_embeddings, name="position_embeddings")(
            start + jnp.arange(length)[None]
        )
        x = layer_norm(self.layer_norm_eps, self.dtype, "LayerNorm")(x)
        return nn.Dropout(self.dropout)(x, deterministic=not train)


class _TextOutput(nn.Module):
    """Dense -> dropout -> LayerNorm(. + residual): BERT's post-LN step (HF *Output)."""

    hidden_size: int
    layer_norm_eps: float
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, residual: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        y = nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=INIT, name="dense")(x)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        return layer_norm(self.layer_norm_eps, self.dtype, "LayerNorm")(y + residual)


class _TextAttention(nn.Module):
    """Attention `self` + post-LN `output` (HF BlipTextAttention), self or cross."""

    hidden_size: int
    num_heads: int
    layer_norm_eps: float
    dropout: float
    attention_dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *args, train: bool, **cache_args) -> jnp.ndarray:
        """x [B, L, D] -> [B, L, D]; `args` (context, mask) and `cache_args` (cache,
        cache_start) as `TextQKV`'s."""
        y = TextQKV(
            self.hidden_size, self.num_heads, self.attention_dropout, dtype=self.dtype, name="self"
        )(x, *args, train=train, **cache_args)
        return _TextOutput(
            self.hidden_size, self.layer_norm_eps, self.dropout, dtype=self.dtype, name="output"
        )(y, x, train=train)


class _TextIntermediate(nn.Module):
    """Dense -> exact GELU (HF BlipTextIntermediate)."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=INIT, name="dense")(x)
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
    def __call__(self, x, *layer_args, **layer_flags):
        """Passes `x` through the layers, each called as `BlipTextLayer`(x, *layer_args,
        **layer_flags)."""
        for i in range(self.num_layers):
            x = BlipTextLayer(**self.layer_kwargs, name=f"layer_{i}")(x, *layer_args, **layer_flags)
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
