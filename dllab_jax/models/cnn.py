"""Small image classifiers: a linear probe on pixels and a plain VGG-style CNN.

Both take `images: [B, H, W, C] float32` (normalised) and return `logits: [B, num_classes]`
float32, whatever the compute `dtype`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dllab_jax import registry
from dllab_jax.models import layers

# torchvision's conv init (kaiming normal, fan_out, relu gain): keeps activations at unit scale
# through ReLU stacks, and is what the PyTorch versions of these labs use.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


@registry.models.register("linear")
class LinearClassifier(nn.Module):
    """The "linear probe on pixels" baseline: flatten the image, one Dense layer.

    Parameters: `H * W * C * num_classes + num_classes`.

    Attributes:
      num_classes: number of output logits.
      dtype: compute dtype (parameters stay float32).
    """

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns logits.

        Args:
          images: [B, H, W, C] float32, normalised.
          train: unused (the model has no dropout or BatchNorm); kept for the common signature.

        Returns:
          [B, num_classes] float32 logits.
        """
        del train
        x = images.reshape(images.shape[0], -1)  # [B, H*W*C]
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)


@registry.models.register("cnn")
class CNN(nn.Module):
    """A small CNN: per width, [conv3x3-BN-ReLU, conv3x3-BN-ReLU, maxpool 2x2], then GAP + Dense.

    Convolutions have no bias (the following BatchNorm's bias makes it redundant), so the
    parameters are, with `c_0 = C` and `c_i = widths[i-1]`:
    `sum_i [9 c_{i-1} c_i + 9 c_i c_i + 4 c_i] + widths[-1] * num_classes + num_classes`.
    Each block halves H and W (floor), so inputs need at least `2 ** len(widths)` pixels a side.

    Attributes:
      num_classes: number of output logits.
      widths: output channels of each block.
      dropout: dropout rate on the pooled features before the head.
      dtype: compute dtype (parameters stay float32).
    """

    num_classes: int
    widths: Sequence[int] = (32, 64, 128)
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns logits.

        Args:
          images: [B, H, W, C] float32, normalised.
          train: use batch statistics (and update `batch_stats`) and apply dropout.

        Returns:
          [B, num_classes] float32 logits.
        """
        x = images
        for i, width in enumerate(self.widths):
            for j in range(2):
                x = nn.Conv(
                    width,
                    (3, 3),
                    padding=((1, 1), (1, 1)),  # torch padding=1: same output size as input
                    use_bias=False,
                    dtype=self.dtype,
                    kernel_init=_conv_init,
                    name=f"block{i}_conv{j}",
                )(x)
                x = layers.torch_batch_norm(train, self.dtype, f"block{i}_bn{j}")(x)
                x = nn.relu(x)
            x = layers.max_pool_2x2(x)
        # Pool in float32 so a bfloat16 run does not lose precision summing many pixels.
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # [B, widths[-1]]
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)
