"""SegFormer (Xie et al. 2021) with MiT-b0 sizes, as HF `SegformerForSemanticSegmentation`.

Layer for layer as HF transformers' SegFormer (parameter counts are equal, see
tests/models/test_segformer.py); names are ours. The encoder is the submodule `encoder` and the
all-MLP head `decode_head`, so fine-tuning can load or freeze `encoder/.*` by regex.

Defaults follow the TU Wien DLVC 2024 A2 handout (SPEC E3): first patch embedding 5x5 stride 2
(stages 2-4: 3x3 stride 2), so the stage strides are 2/4/8/16; the paper's (7, 3, 3, 3) /
(4, 2, 2, 2) is `patch_sizes=(7, 3, 3, 3), strides=(4, 2, 2, 2)`. LayerNorm epsilon is the
handout's 1e-6 (HF's modules use torch's default 1e-5: set `layer_norm_eps=1e-5` to match it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dllab_jax import registry
from dllab_jax.models import layers

_dense_init = nn.initializers.truncated_normal(0.02)
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def resize_bilinear(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    """[B, h, w, C] -> [B, height, width, C]; half-pixel centres, i.e. torch's
    `interpolate(mode="bilinear", align_corners=False)` (identical when upsampling)."""
    if x.shape[1:3] == (height, width):
        return x
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "bilinear")


class OverlapPatchEmbed(nn.Module):
    """Conv (kernel `patch_size`, stride `stride`, padding patch_size // 2) + LayerNorm."""

    hidden_size: int
    patch_size: int
    stride: int
    layer_norm_eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, H, W, C_in] -> [B, H', W', hidden_size]."""
        pad = self.patch_size // 2
        x = layers.Conv(
            self.hidden_size,
            (self.patch_size, self.patch_size),
            strides=self.stride,
            padding=((pad, pad), (pad, pad)),
            dtype=self.dtype,
            kernel_init=_conv_init,
            name="proj",
        )(x)
        return nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="norm")(x)


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values are spatially reduced by `sr_ratio`
    (a conv with kernel = stride = sr_ratio, then LayerNorm)."""

    hidden_size: int
    num_heads: int
    sr_ratio: int
    layer_norm_eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, H, W, C] -> [B, H, W, C]."""
        batch, height, width, channels = x.shape
        head_dim = channels // self.num_heads
        dense = lambda name: nn.Dense(
            self.hidden_size, dtype=self.dtype, kernel_init=_dense_init, name=name
        )
        q = dense("query")(x).reshape(batch, height * width, self.num_heads, head_dim)
        kv = x
        if self.sr_ratio > 1:
            kv = layers.Conv(
                self.hidden_size,
                (self.sr_ratio, self.sr_ratio),
                strides=self.sr_ratio,
                padding="VALID",
                dtype=self.dtype,
                kernel_init=_conv_init,
                name="sr",
            )(kv)
            kv = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="sr_norm")(kv)
        kv = kv.reshape(batch, -1, channels)
        k = dense("key")(kv).reshape(batch, -1, self.num_heads, head_dim)
        v = dense("value")(kv).reshape(batch, -1, self.num_heads, head_dim)
        out = nn.dot_product_attention(q, k, v)  # scales by head_dim ** -0.5
        out = out.reshape(batch, height, width, channels)
        return dense("out")(out)


class MixFFN(nn.Module):
    """Dense -> 3x3 depthwise conv -> GELU -> Dense (the conv replaces position embeddings)."""

    hidden_size: int
    mlp_ratio: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, H, W, C] -> [B, H, W, C]."""
        inner = self.hidden_size * self.mlp_ratio
        x = nn.Dense(inner, dtype=self.dtype, kernel_init=_dense_init, name="fc1")(x)
        x = nn.Conv(
            inner,
            (3, 3),
            padding=((1, 1), (1, 1)),
            feature_group_count=inner,
            dtype=self.dtype,
            kernel_init=_conv_init,
            name="dwconv",
        )(x)
        x = nn.gelu(x, approximate=False)  # torch's default GELU is the exact one
        return nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=_dense_init, name="fc2")(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MixFFN(LN(x)), with drop path."""

    hidden_size: int
    num_heads: int
    sr_ratio: int
    mlp_ratio: int
    drop_path: float
    layer_norm_eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """[B, H, W, C] -> [B, H, W, C]."""
        # Stochastic depth: one keep/drop per sample, scaled by 1 / (1 - rate).
        drop = nn.Dropout(self.drop_path, broadcast_dims=(1, 2, 3), deterministic=not train)
        norm = lambda name: nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=name)
        y = EfficientSelfAttention(
            self.hidden_size,
            self.num_heads,
            self.sr_ratio,
            self.layer_norm_eps,
            dtype=self.dtype,
            name="attn",
        )(norm("norm1")(x))
        x = x + drop(y)
        y = MixFFN(self.hidden_size, self.mlp_ratio, dtype=self.dtype, name="mlp")(norm("norm2")(x))
        return x + drop(y)


class MiTSizes(nn.Module):
    """The arguments `MixTransformer` and `SegFormer` share (a fields-only base:
    `layers.fields_of`).

    Attributes:
      hidden_sizes, depths, num_heads, sr_ratios, mlp_ratio: MiT sizes (b0 by default).
      patch_sizes, strides: the four patch embeddings' kernels and strides; default the
        handout's (5, 3, 3, 3) / (2, 2, 2, 2), the paper's is (7, 3, 3, 3) / (4, 2, 2, 2).
      drop_path_rate: stochastic depth of the last block (HF's and the paper's 0.1).
      layer_norm_eps: every LayerNorm's epsilon.
      dtype: compute dtype; parameters stay float32.
    """

    hidden_sizes: Sequence[int] = (32, 64, 160, 256)
    depths: Sequence[int] = (2, 2, 2, 2)
    num_heads: Sequence[int] = (1, 2, 5, 8)
    sr_ratios: Sequence[int] = (8, 4, 2, 1)
    mlp_ratio: int = 4
    patch_sizes: Sequence[int] = (5, 3, 3, 3)
    strides: Sequence[int] = (2, 2, 2, 2)
    drop_path_rate: float = 0.1
    layer_norm_eps: float = 1e-6
    dtype: Any = jnp.float32


class MixTransformer(MiTSizes):
    """The MiT encoder: per stage a patch embedding, `depths[i]` blocks and a LayerNorm.

    Attributes: `MiTSizes`.
    """

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> list[jnp.ndarray]:
        """Returns the four stage outputs [B, H / s_i, W / s_i, hidden_sizes[i]] (s_i the
        cumulative stride, sizes rounded up) for images [B, H, W, C]."""
        total = sum(self.depths)
        # Drop-path rate grows linearly over all blocks, from 0 to drop_path_rate (as HF).
        rates = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        x = images
        outputs = []
        block_index = 0
        for stage in range(len(self.hidden_sizes)):
            x = OverlapPatchEmbed(
                self.hidden_sizes[stage],
                self.patch_sizes[stage],
                self.strides[stage],
                self.layer_norm_eps,
                dtype=self.dtype,
                name=f"patch_embed{stage + 1}",
            )(x)
            for i in range(self.depths[stage]):
                x = Block(
                    self.hidden_sizes[stage],
                    self.num_heads[stage],
                    self.sr_ratios[stage],
                    self.mlp_ratio,
                    rates[block_index],
                    self.layer_norm_eps,
                    dtype=self.dtype,
                    name=f"block{stage + 1}_{i}",
                )(x, train=train)
                block_index += 1
            x = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=f"norm{stage + 1}")(x)
            outputs.append(x)
        return outputs


class SegFormerHead(nn.Module):
    """All-MLP decoder: per-stage Dense to `hidden_size`, bilinear upsample to stage-1 size,
    concat (last stage first, as HF), 1x1 conv (no bias) + BatchNorm + ReLU, dropout, 1x1 conv."""

    num_classes: int
    hidden_size: int = 256
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray], *, train: bool) -> jnp.ndarray:
        """Stage outputs (finest first) -> [B, h1, w1, num_classes] logits at stage-1 size."""
        height, width = features[0].shape[1:3]
        projected = []
        for stage, feature in enumerate(features):
            y = nn.Dense(
                self.hidden_size,
                dtype=self.dtype,
                kernel_init=_dense_init,
                name=f"linear_c{stage + 1}",
            )(feature)
            projected.append(resize_bilinear(y, height, width))
        x = jnp.concatenate(projected[::-1], axis=-1)
        x = nn.Conv(
            self.hidden_size,
            (1, 1),
            use_bias=False,
            dtype=self.dtype,
            kernel_init=_conv_init,
            name="linear_fuse",
        )(x)
        x = layers.torch_batch_norm(train, self.dtype, "bn")(x)
        x = nn.relu(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Conv(
            self.num_classes, (1, 1), dtype=self.dtype, kernel_init=_conv_init, name="classifier"
        )(x)


@registry.models.register("segformer")
class SegFormer(MiTSizes, kw_only=True):
    """SegFormer: `encoder` (MiT) -> `decode_head` -> bilinear upsample to the input size.

    Keyword arguments only (`SegFormer(num_classes=3)`).

    Attributes:
      num_classes: per-pixel logits.
      hidden_sizes, ..., layer_norm_eps, dtype: the encoder's, `MiTSizes`.
      decoder_hidden_size: width of the all-MLP head.
      decoder_dropout: dropout before the classifier.
    """

    num_classes: int
    decoder_hidden_size: int = 256
    decoder_dropout: float = 0.1

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns per-pixel logits.

        Args:
          images: [B, H, W, C] float32, normalised.
          train: dropout and drop path on (needs a 'dropout' rng), BatchNorm batch statistics.

        Returns:
          [B, H, W, num_classes] float32 logits.
        """
        features = MixTransformer(**layers.fields_of(MiTSizes, self), name="encoder")(
            images, train=train
        )
        logits = SegFormerHead(
            self.num_classes,
            self.decoder_hidden_size,
            self.decoder_dropout,
            dtype=self.dtype,
            name="decode_head",
        )(features, train=train)
        logits = resize_bilinear(logits.astype(jnp.float32), *images.shape[1:3])
        return logits
