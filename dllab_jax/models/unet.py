"""U-Net (Ronneberger et al. 2015) with padded convs and a switch that removes the skips.

Used for segmentation (SPEC E2, `num_classes` logits) and colourisation (3 output channels).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dllab_jax import registry
from dllab_jax.models import layers


class DoubleConv(nn.Module):
    """(3x3 conv, no bias -> BatchNorm -> ReLU) twice: [B, H, W, C_in] -> [B, H, W, features]."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        for i in (1, 2):
            x = nn.Conv(
                self.features,
                (3, 3),
                padding=((1, 1), (1, 1)),
                use_bias=False,  # BatchNorm's bias takes its place
                dtype=self.dtype,
                name=f"conv{i}",
            )(x)
            x = layers.torch_batch_norm(train, self.dtype, f"bn{i}")(x)
            x = nn.relu(x)
        return x


@registry.models.register("unet")
class UNet(nn.Module):
    """Encoder (DoubleConv + 2x2 max-pool per level), bottleneck, decoder, 1x1 output conv.

    Each decoder level upsamples with a 2x2 stride-2 transposed conv to that level's width,
    concatenates the encoder's feature map of the same level (if `skip_connections`) and
    applies a DoubleConv. Input sides must be multiples of 2 ** len(features).

    Attributes:
      num_classes: output channels (class logits, or 3 for colourisation).
      features: encoder widths, finest level first.
      bottleneck: width of the DoubleConv below the last pooling.
      skip_connections: if False the decoder sees no encoder features (only its upsampled
        input), so its DoubleConvs take `f` rather than `2 f` channels.
      dtype: compute dtype; parameters stay float32.
    """

    num_classes: int
    features: Sequence[int] = (64, 128, 256, 512)
    bottleneck: int = 1024
    skip_connections: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns [B, H, W, num_classes] float32 outputs for images [B, H, W, C]."""
        block = functools.partial(DoubleConv, dtype=self.dtype)
        x = images
        skips = []
        for level, width in enumerate(self.features):
            x = block(width, name=f"down{level}")(x, train=train)
            skips.append(x)
            x = layers.max_pool_2x2(x)
        x = block(self.bottleneck, name="bottleneck")(x, train=train)
        for level in reversed(range(len(self.features))):
            width = self.features[level]
            x = layers.PatchConvTranspose(
                width, (2, 2), dtype=self.dtype, name=f"up{level}_upsample"
            )(x)
            if self.skip_connections:
                x = jnp.concatenate([skips[level], x], axis=-1)
            x = block(width, name=f"up{level}")(x, train=train)
        x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)
