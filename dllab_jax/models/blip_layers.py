"""Pieces both BLIP towers use: the init, attention, BERT's cached q/k/v, L2 normalisation.

Numerics follow Hugging Face's BLIP: attention is softmax(q k^T / sqrt(d_head)) with the
softmax in float32 and dropout on the attention weights, drawn per head and query as torch
does. `blip_vision.py` and `blip_text.py` build the towers from these.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# BERT's init (HF `initializer_range=0.02`) for every Dense, embedding and token parameter:
# pretrained BLIP was trained from it, and the tiny models train well from it.
INIT = nn.initializers.truncated_normal(stddev=0.02)


def attention(
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


class TextQKV(nn.Module):
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
        dense = functools.partial(nn.Dense, self.hidden_size, dtype=self.dtype, kernel_init=INIT)
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
        return attention(
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


def l2_normalize(x: jnp.ndarray) -> jnp.ndarray:
    """x / max(||x||, 1e-12) along the last axis, as torch's F.normalize."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, 1e-12)


def layer_norm(eps: float, dtype: Any, name: str | None = None) -> nn.LayerNorm:
    """torch's LayerNorm (two-pass variance), parameters `scale` and `bias`."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)
