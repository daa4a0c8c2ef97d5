"""BLIP's image tower: a ViT, layer for layer as Hugging Face's `BlipVisionModel`.

Parameter names mirror the HF state dict (`vision_model.encoder.layers.3.self_attn.qkv.weight`
is our `vision_model/encoder/layers_3/self_attn/qkv/kernel`, transposed), so published
checkpoints load by renaming (`dllab_jax.weights.hf_blip`). Pre-LN blocks, LayerNorm epsilon
1e-5, the exact (erf) GELU (HF's `hidden_act="gelu"`). `TwoTower` and `BlipCaptioner` hold it
as `vision_model`, built from `config.model.image` (a dict of `BlipVisionEncoder`'s arguments;
sizes in `blip_sizes.VISION_SIZES`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dllab_jax.models.blip_layers import INIT, attention, layer_norm


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
        cls = self.param("class_embedding", INIT, (1, 1, self.hidden_size))
        pos = self.param("position_embedding", INIT, (1, num_positions, self.hidden_size))
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
        qkv = nn.Dense(3 * d, dtype=self.dtype, kernel_init=INIT, name="qkv")(x)
        # HF splits the fused output as (3, heads, head_dim): q, k, v are contiguous thirds.
        q, k, v = jnp.split(qkv, 3, axis=-1)
        y = attention(
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
        return nn.Dense(d, dtype=self.dtype, kernel_init=INIT, name="projection")(y)


class _VisionMlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (HF BlipMLP)."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=INIT, name="fc1")(x)
        y = nn.gelu(y, approximate=False)  # HF hidden_act="gelu" is the erf form
        return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=INIT, name="fc2")(y)


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
        norm = functools.partial(layer_norm, self.layer_norm_eps, self.dtype)
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
        return layer_norm(self.layer_norm_eps, self.dtype, "post_layernorm")(x)
