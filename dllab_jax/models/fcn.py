"""FCN-32 (Long et al. 2015) on a ResNet-18 trunk, as in Ljubljana HW2 task 2 (SPEC E2).

The trunk is `ResNet18Backbone` (imagenet stem) held under the attribute name `backbone`, so a
`ResNet18` classification checkpoint's `backbone/...` parameters load into it by name.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from dllab_jax import registry
from dllab_jax.models import layers
from dllab_jax.models.resnet import ResNet18Backbone

UPSAMPLE_KERNEL = 64
UPSAMPLE_STRIDE = 32
UPSAMPLE_PADDING = 16  # torch's ConvTranspose2d padding: output = (in - 1) * 32 - 2 * 16 + 64


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
    """The classic FCN bilinear upsampling kernel, one per channel and no mixing across them.

    Args:
      size: kernel height and width.
      channels: input and output channels.

    Returns:
      [size, size, channels, channels] float32, flax's ConvTranspose kernel layout: the
      [size, size] bilinear filter on the diagonal (in == out), zeros elsewhere.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.arange(size, dtype=np.float64)
    filt1d = 1.0 - np.abs(og - center) / factor
    filt = np.outer(filt1d, filt1d).astype(np.float32)
    kernel = np.zeros((size, size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = filt[:, :, None]
    return kernel


def _bilinear_init(key, shape, dtype=jnp.float32):
    del key  # deterministic
    size, _, channels_in, channels_out = shape
    assert channels_in == channels_out, shape
    return jnp.asarray(bilinear_kernel(size, channels_in), dtype)


def upsample_x32(num_classes: int, dtype: Any = jnp.float32, name: str | None = None):
    """The transposed conv (kernel 64, stride 32, torch padding 16): [B,h,w,C] -> [B,32h,32w,C].

    torch's padding p of a transposed conv is lax padding k - 1 - p on each side of the
    stride-dilated input; the kernel is symmetric, so flipping (torch vs. flax) does not matter.
    """
    pad = UPSAMPLE_KERNEL - 1 - UPSAMPLE_PADDING
    return nn.ConvTranspose(
        num_classes,
        (UPSAMPLE_KERNEL, UPSAMPLE_KERNEL),
        strides=(UPSAMPLE_STRIDE, UPSAMPLE_STRIDE),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        kernel_init=_bilinear_init,
        name=name,
    )


@registry.models.register("fcn32")
class FCN32(nn.Module):
    """FCN-32: `backbone` -> 1x1 conv 512 + ReLU -> 1x1 conv to classes -> x32 `upsample`.

    Output size equals input size for inputs whose sides are multiples of 32.

    Attributes:
      num_classes: number of output logits per pixel.
      dtype: compute dtype; parameters stay float32.
    """

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns per-pixel logits.

        Args:
          images: [B, H, W, C] float32, normalised; H and W multiples of 32.
          train: use batch statistics (and update `batch_stats`) in the backbone.

        Returns:
          [B, H, W, num_classes] float32 logits.
        """
        x = ResNet18Backbone("imagenet", dtype=self.dtype, name="backbone")(images, train=train)
        x = nn.relu(layers.Conv(512, (1, 1), dtype=self.dtype, name="conv6")(x))
        x = layers.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="score")(x)
        x = upsample_x32(self.num_classes, self.dtype, name="upsample")(x)
        return x.astype(jnp.float32)
