"""ResNet-18, layer for layer as torchvision's `resnet18`.

The convolutional trunk is its own module, `ResNet18Backbone`, held by `ResNet18` under the
attribute name `backbone` (the classifier Dense is `head`): models that reuse the trunk (e.g.
an FCN) hold it under the same name, so pretrained weights load into them by parameter name.

Parameter names mirror torchvision's state dict (`layer2_0/downsample_conv` is
`layer2.0.downsample.0`), which keeps the converter of its weights
(`dllab_jax.weights.torchvision_resnet18`) a plain renaming.
Numerics follow torch: explicit paddings, BatchNorm momentum 0.9 (torch's 0.1) and epsilon
1e-5. One difference remains: torch updates `running_var` with the unbiased batch variance,
flax with the biased one (a factor n/(n-1), n = B*H*W); outputs are unaffected.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax import registry
from dllab_jax.errors import UserError
from dllab_jax.models import layers

STEMS = ("imagenet", "cifar")
_WIDTH_MULTIPLES = (1, 2, 4, 8)
_BLOCKS_PER_STAGE = 2

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), an untruncated normal.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _torch_linear_init(fan_in: int) -> tuple[nn.initializers.Initializer, ...]:
    """torch.nn.Linear's default init: weight and bias both U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    # kaiming_uniform(a=sqrt(5)) is U(+-sqrt(6 / ((1 + 5) fan_in))) = U(+-1/sqrt(fan_in)).
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"), bias_init


def check_stem(stem: str) -> None:
    if stem not in STEMS:
        raise UserError(f"unknown ResNet stem {stem!r}; set config.model.stem to one of {STEMS}")


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 conv-BN, identity or 1x1 conv-BN shortcut, ReLU.

    Attributes:
      features: output channels.
      strides: stride of the first conv and of the shortcut.
      dtype: compute dtype.
    """

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """[B, H, W, C_in] -> [B, ceil(H/strides), ceil(W/strides), features]."""
        conv = functools.partial(
            layers.Conv, self.features, use_bias=False, dtype=self.dtype, kernel_init=_conv_init
        )

        def norm(name):
            return layers.torch_batch_norm(train, self.dtype, name, use_fast_variance=False)

        pad = ((1, 1), (1, 1))
        y = conv((3, 3), strides=self.strides, padding=pad, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv((3, 3), padding=pad, name="conv2")(y)
        y = norm(name="bn2")(y)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = conv(
                (1, 1), strides=self.strides, padding=((0, 0), (0, 0)), name="downsample_conv"
            )(x)
            shortcut = norm(name="downsample_bn")(shortcut)
        return nn.relu(y + shortcut)


class ResNet18Backbone(nn.Module):
    """The convolutional part of ResNet-18 (everything before global average pooling).

    Attributes:
      stem: "imagenet" (7x7/2 conv + 3x3/2 maxpool, as torchvision) or "cifar" (3x3/1 conv,
        no maxpool, for 32x32 inputs).
      width: channels of the stem and the first stage; the stages have width x (1, 2, 4, 8).
        64 is ResNet-18; narrower ones keep its depth and resolutions at a fraction of the
        cost (the offline CIFAR-stem runs on 2 CPU cores).
      dtype: compute dtype (parameters stay float32).
    """

    stem: str = "imagenet"
    width: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns the last feature map.

        Args:
          images: [B, H, W, C] float32, normalised.
          train: use batch statistics and update `batch_stats`.

        Returns:
          [B, H/32, W/32, 8 * width] for the imagenet stem, [B, H/8, W/8, 8 * width] for the
          cifar stem
          (sizes rounded up, as torch's strided convs do).
        """
        check_stem(self.stem)
        if self.stem == "imagenet":
            kernel, strides, pad = (7, 7), 2, ((3, 3), (3, 3))
        else:
            kernel, strides, pad = (3, 3), 1, ((1, 1), (1, 1))
        x = layers.Conv(
            self.width,
            kernel,
            strides=strides,
            padding=pad,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=_conv_init,
            name="conv1",
        )(images)
        # use_fast_variance=False: torch's two-pass variance, not E[x^2] - E[x]^2.
        x = layers.torch_batch_norm(train, self.dtype, "bn1", use_fast_variance=False)(x)
        x = nn.relu(x)
        if self.stem == "imagenet":
            # flax pads max_pool with -inf, as torch's MaxPool2d(3, 2, padding=1) does.
            x = layers.max_pool_3x3_stride2(x)
        for stage, multiple in enumerate(_WIDTH_MULTIPLES):
            width = self.width * multiple
            for block in range(_BLOCKS_PER_STAGE):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(width, strides, dtype=self.dtype, name=f"layer{stage + 1}_{block}")(
                    x, train=train
                )
        return x


@registry.models.register("resnet18")
class ResNet18(nn.Module):
    """ResNet-18 classifier: `backbone` -> global average pool -> dropout -> `head`.

    11,689,512 parameters at 1000 classes with the imagenet stem, as torchvision's.

    Attributes:
      num_classes: number of output logits.
      stem: "imagenet" or "cifar", see `ResNet18Backbone`.
      width: the first stage's channels (64 = ResNet-18), see `ResNet18Backbone`.
      dropout: dropout rate on the pooled features (torchvision has none: 0.0).
      dtype: compute dtype, e.g. jnp.bfloat16 for benchmarking; parameters stay float32.
    """

    num_classes: int
    stem: str = "imagenet"
    width: int = 64
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """[B, H, W, C] normalised images -> [B, num_classes] float32 logits; `train` uses
        batch statistics (and updates `batch_stats`) and applies dropout, as in `CNN`."""
        x = ResNet18Backbone(self.stem, self.width, dtype=self.dtype, name="backbone")(
            images, train=train
        )
        # Pool in float32 so a bfloat16 run does not lose precision summing many pixels.
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # [B, 8 * width]
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        kernel_init, bias_init = _torch_linear_init(x.shape[-1])
        x = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            kernel_init=kernel_init,
            bias_init=bias_init,
            name="head",
        )(x)
        return x.astype(jnp.float32)
