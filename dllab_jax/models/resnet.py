"""ResNet-18, layer for layer as torchvision's `resnet18`, and a converter for its weights.

The convolutional trunk is its own module, `ResNet18Backbone`, held by `ResNet18` under the
attribute name `backbone` (the classifier Dense is `head`): models that reuse the trunk (e.g.
an FCN) hold it under the same name, so pretrained weights load into them by parameter name.

Parameter names mirror torchvision's state dict (`layer2_0/downsample_conv` is
`layer2.0.downsample.0`), which keeps `variables_from_torchvision_resnet18` a plain renaming.
Numerics follow torch: explicit paddings, BatchNorm momentum 0.9 (torch's 0.1) and epsilon
1e-5. One difference remains: torch updates `running_var` with the unbiased batch variance,
flax with the biased one (a factor n/(n-1), n = B*H*W); outputs are unaffected.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax import registry
from dllab_jax.errors import UserError
from dllab_jax.models import layers

STEMS = ("imagenet", "cifar")
_WIDTHS = (64, 128, 256, 512)
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


def _check_stem(stem: str) -> None:
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
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            use_fast_variance=False,  # torch's two-pass variance, not E[x^2] - E[x]^2
        )
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
      dtype: compute dtype (parameters stay float32).
    """

    stem: str = "imagenet"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns the last feature map.

        Args:
          images: [B, H, W, C] float32, normalised.
          train: use batch statistics and update `batch_stats`.

        Returns:
          [B, H/32, W/32, 512] for the imagenet stem, [B, H/8, W/8, 512] for the cifar stem
          (sizes rounded up, as torch's strided convs do).
        """
        _check_stem(self.stem)
        if self.stem == "imagenet":
            kernel, strides, pad = (7, 7), 2, ((3, 3), (3, 3))
        else:
            kernel, strides, pad = (3, 3), 1, ((1, 1), (1, 1))
        x = layers.Conv(
            64,
            kernel,
            strides=strides,
            padding=pad,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=_conv_init,
            name="conv1",
        )(images)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            use_fast_variance=False,
            name="bn1",
        )(x)
        x = nn.relu(x)
        if self.stem == "imagenet":
            # flax pads max_pool with -inf, as torch's MaxPool2d(3, 2, padding=1) does.
            x = layers.max_pool_3x3_stride2(x)
        for stage, width in enumerate(_WIDTHS):
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
      dropout: dropout rate on the pooled features (torchvision has none: 0.0).
      dtype: compute dtype, e.g. jnp.bfloat16 for benchmarking; parameters stay float32.
    """

    num_classes: int
    stem: str = "imagenet"
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
        x = ResNet18Backbone(self.stem, dtype=self.dtype, name="backbone")(images, train=train)
        # Pool in float32 so a bfloat16 run does not lose precision summing many pixels.
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # [B, 512]
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


def variables_from_torchvision_resnet18(
    state_dict: Mapping[str, np.ndarray], stem: str = "imagenet"
) -> dict:
    """Converts a torchvision-layout ResNet-18 state dict into variables for `ResNet18`.

    Conv weights go from torch's [O, I, kh, kw] to flax's [kh, kw, I, O], Linear weights from
    [O, I] to [I, O]; BatchNorm weight/bias/running_mean/running_var become scale/bias in
    `params` and mean/var in `batch_stats`. `num_batches_tracked` is ignored. The number of
    classes is read from `fc.weight`.

    Args:
      state_dict: torchvision key -> array (`conv1.weight`, `layer1.0.bn1.running_mean`,
        `layer2.0.downsample.0.weight`, `fc.bias`, ...); numpy arrays, or anything
        `np.asarray` takes (e.g. CPU torch tensors from `state_dict()`).
      stem: the stem the weights were trained with ("imagenet" or "cifar"); it fixes the
        expected shape of `conv1.weight`.

    Returns:
      {"params": ..., "batch_stats": ...}: nested dicts of float32 numpy arrays, for
      `ResNet18(num_classes, stem=stem).apply(variables, images)`.

    Raises:
      UserError: a key is missing, has the wrong shape, or is not part of ResNet-18.
    """
    _check_stem(stem)
    state = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    used: set[str] = set()
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in state:
            raise UserError(f"torchvision ResNet-18 state dict has no key {key!r}")
        value = np.asarray(state[key], dtype=np.float32)
        if value.shape != shape:
            raise UserError(
                f"torchvision ResNet-18 state dict key {key!r} has shape {value.shape}, "
                f"expected {shape} (stem={stem!r})"
            )
        used.add(key)
        return value

    def put(tree: dict, path: tuple[str, ...], leaves: dict[str, np.ndarray]) -> None:
        for name in path:
            tree = tree.setdefault(name, {})
        tree.update(leaves)

    def conv(key: str, path: tuple[str, ...], shape: tuple[int, int, int, int]) -> None:
        put(params, path, {"kernel": take(f"{key}.weight", shape).transpose(2, 3, 1, 0)})

    def norm(key: str, path: tuple[str, ...], channels: int) -> None:
        scale, bias = take(f"{key}.weight", (channels,)), take(f"{key}.bias", (channels,))
        mean = take(f"{key}.running_mean", (channels,))
        var = take(f"{key}.running_var", (channels,))
        put(params, path, {"scale": scale, "bias": bias})
        put(stats, path, {"mean": mean, "var": var})

    stem_kernel = 7 if stem == "imagenet" else 3
    conv("conv1", ("backbone", "conv1"), (64, 3, stem_kernel, stem_kernel))
    norm("bn1", ("backbone", "bn1"), 64)
    in_width = 64
    for stage, width in enumerate(_WIDTHS):
        for block in range(_BLOCKS_PER_STAGE):
            src, dst = f"layer{stage + 1}.{block}", ("backbone", f"layer{stage + 1}_{block}")
            conv(f"{src}.conv1", (*dst, "conv1"), (width, in_width, 3, 3))
            norm(f"{src}.bn1", (*dst, "bn1"), width)
            conv(f"{src}.conv2", (*dst, "conv2"), (width, width, 3, 3))
            norm(f"{src}.bn2", (*dst, "bn2"), width)
            strides = 2 if stage > 0 and block == 0 else 1
            if strides != 1 or in_width != width:  # the same rule as BasicBlock's
                conv(f"{src}.downsample.0", (*dst, "downsample_conv"), (width, in_width, 1, 1))
                norm(f"{src}.downsample.1", (*dst, "downsample_bn"), width)
            in_width = width

    # The head's size is whatever the checkpoint was trained for; only its input is fixed.
    fc_shape = np.shape(state["fc.weight"]) if "fc.weight" in state else ()
    num_classes = fc_shape[0] if fc_shape else 0
    put(
        params,
        ("head",),
        {
            "kernel": take("fc.weight", (num_classes, in_width)).T,
            "bias": take("fc.bias", (num_classes,)),
        },
    )

    unexpected = sorted(set(state) - used)
    if unexpected:
        raise UserError(
            f"torchvision ResNet-18 state dict has key {unexpected[0]!r} that ResNet-18 "
            f"(stem={stem!r}) does not have ({len(unexpected)} unexpected keys in all)"
        )
    return {"params": params, "batch_stats": stats}


def read_torchvision_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torchvision ResNet-18 state dict from a local `.pth` (`torch.save(state_dict)`, as
    torchvision publishes `resnet18-f37072fd.pth`; needs torch) or `.safetensors` file."""
    import os

    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise UserError(
            f"no torchvision ResNet-18 weights at {path}; set config.init_from.workdir to a "
            "local resnet18-*.pth or .safetensors file"
        )
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return dict(load_file(path))
    try:
        import torch
    except ImportError:
        raise UserError(
            f"reading {path} needs torch: pip install torch (CPU is enough), or convert the "
            "file to .safetensors"
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise UserError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def read_init_variables(path: str, which: str = "best", *, sharding=None):
    """`config.init_from.format = "torchvision_resnet18"`: ImageNet (or any) torchvision
    ResNet-18 weights from a local file, named as `ResNet18`'s variables (`backbone/...`,
    `head`), for loading by name (e.g. into FCN-32's `backbone`).

    Returns:
      ({"params": ..., "model_state": {"batch_stats": ...}}, meta); `which` is ignored.
    """
    del which
    variables = variables_from_torchvision_resnet18(read_torchvision_state_dict(path))
    items = {
        "params": variables["params"],
        "model_state": {"batch_stats": variables["batch_stats"]},
    }
    if sharding is not None:
        items = jax.device_put(items, sharding)
    return items, {"step": 0, "source": str(path)}
