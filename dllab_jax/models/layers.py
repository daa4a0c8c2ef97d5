"""Layers written in the form XLA runs fastest, with the parameters of flax's own layers.

XLA:CPU lowers `nn.max_pool` to reduce-window, whose gradient is a select-and-scatter that
took a fifth of the CNN's step on the 2-core CPU, and `nn.ConvTranspose` to an input-dilated
convolution whose weight gradient is a slow generic convolution. The two cases our models use
have exact dense forms: a 2x2 stride-2 max-pool is a reshape and a max, and a transposed
convolution whose kernel equals its stride is one matrix product followed by depth-to-space.
Same parameters (names, shapes, initialisers), same outputs; gradients agree to float
rounding (a max over tied values splits its gradient where reduce-window picks one; ties are
exact zeros after a ReLU, whose gradient is zero anyway).

`dllab_jax.performance.reference_ops()` switches every model back to flax's own ops (to
compare, or on a backend where they are faster).

Also the pieces several models share: `torch_batch_norm` (BatchNorm with PyTorch's
statistics), `ComposedModule` (towers' arguments as nested sub-configs), `fields_of` (a model
that passes its part's arguments on) and `stop_gradient_if` (a frozen tower, see
`dllab_jax.optim`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from dllab_jax import performance


class ComposedModule(nn.Module):
    """Base of a composite model whose parts' arguments are dict fields (nested sub-configs,
    e.g. `TwoTower.image`): makes them FrozenDicts, since jit hashes modules (a static
    argument) and a dict does not hash."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name, None)
            if isinstance(value, dict):
                object.__setattr__(self, field.name, FrozenDict(value))
        super().__post_init__()


def fields_of(sizes: type[nn.Module], module: nn.Module) -> dict[str, Any]:
    """The values `module` holds for the fields the class `sizes` declares, sequences as tuples
    (a module field must hash under jit).

    A model and its part inherit their shared arguments from one fields-only class (`ViTSizes`
    for `ViT` and `ViTEncoder`), so defaults and docs live once; the model builds the part
    with `Part(**fields_of(Sizes, self))`.
    """
    names = [f.name for f in dataclasses.fields(sizes) if f.name not in ("parent", "name")]
    values = {name: getattr(module, name) for name in names}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def torch_batch_norm(train: bool, dtype: Any, name: str, **kwargs) -> nn.BatchNorm:
    """`nn.BatchNorm` with PyTorch's `BatchNorm2d` defaults, so running statistics match the
    PyTorch labs: flax's momentum 0.9 is torch's 0.1, epsilon 1e-5. Batch statistics (and
    their update) in training, running averages otherwise. `kwargs` go to `nn.BatchNorm`."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        name=name,
        **kwargs,
    )


def stop_gradient_if(frozen: bool, x: jnp.ndarray) -> jnp.ndarray:
    """`x` behind `jax.lax.stop_gradient` when it comes from a frozen submodule."""
    return jax.lax.stop_gradient(x) if frozen else x


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max-pool with stride 2 ('VALID': an odd last row or column is dropped), NHWC."""
    if performance.use_reference_ops():
        return nn.max_pool(x, (2, 2), strides=(2, 2))
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def max_pool_3x3_stride2(x: jnp.ndarray) -> jnp.ndarray:
    """torch's MaxPool2d(3, stride=2, padding=1) (ResNet's stem), NHWC: -inf padding.

    As the max of nine strided slices: reduce-window's gradient (select-and-scatter with
    index tensors) was 5% of ResNet-18's step on the CPU; a slice's gradient is a pad.
    """
    if performance.use_reference_ops():
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    _, h, w, _ = x.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    windows = [
        x[:, i : i + 2 * (ho - 1) + 1 : 2, j : j + 2 * (wo - 1) + 1 : 2]
        for i in range(3)
        for j in range(3)
    ]
    out = windows[0]
    for window in windows[1:]:
        out = jnp.maximum(out, window)
    return out


class PatchConvTranspose(nn.Module):
    """`nn.ConvTranspose(features, kernel_size, strides=kernel_size)`, as a matmul.

    Each input pixel becomes a kernel_size block of output pixels that no other input pixel
    touches, so the layer is `x @ kernel` followed by depth-to-space. The parameters are
    those of `nn.ConvTranspose` (`kernel` [kh, kw, C_in, features], `bias` [features]) with
    its conventions: flax's transposed convolution flips the kernel spatially (with
    `transpose_kernel=False`), so output offset (a, b) of a block uses kernel[kh-1-a, kw-1-b].
    Padding 'SAME' and 'VALID' give the same result when kernel == stride.
    """

    features: int
    kernel_size: Sequence[int]
    use_bias: bool = True
    dtype: Any = None
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if performance.use_reference_ops():  # what nn.ConvTranspose runs
            y = jax.lax.conv_transpose(
                x, kernel, (kh, kw), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        else:
            b, h, w, _ = x.shape
            y = jnp.einsum("bhwc,ijco->bhiwjo", x, kernel[::-1, ::-1])
            y = y.reshape(b, h * kh, w * kw, self.features)
        if bias is not None:
            y = y + bias
        return y


def _pairs(value, n: int = 2) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, Sequence) else (value,) * n


def _explicit_padding(padding, in_hw, kernel, strides) -> list[tuple[int, int]] | None:
    """`nn.Conv`'s padding argument as (low, high) per spatial dim; None if not supported."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            return None  # 'CIRCULAR' and the like: flax's own path
        return jax.lax.padtype_to_pads(in_hw, kernel, strides, padding.upper())
    if isinstance(padding, int):
        return [(padding, padding)] * len(kernel)
    pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
    return pads if len(pads) == len(kernel) else None


class Conv(nn.Module):
    """`nn.Conv` (2-D, NHWC) with the same parameters, run as patches @ kernel where XLA:CPU
    is slow at convolutions.

    XLA:CPU's convolutions on tiny output maps (2x2, 1x1: ResNet-18's last two stages at
    32x32 input, FCN-32's at 64x64) take a generic path up to 14x slower than the same
    arithmetic as one matrix product (fwd+bwd, 2 cores: 128x2x2x256 -> 256 3x3, 357 ms as a
    convolution vs 29 ms as patches @ kernel); on larger maps the convolution is faster and
    stays. `performance.conv_as_matmul` decides.
    """

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Any = "SAME"
    use_bias: bool = True
    dtype: Any = None
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel_size = tuple(self.kernel_size)
        strides = _pairs(self.strides)
        in_channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (*kernel_size, in_channels, self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        pads = _explicit_padding(self.padding, x.shape[1:3], kernel_size, strides)
        if pads is None or x.ndim != 4:
            raise ValueError(f"layers.Conv takes 2-D SAME/VALID/explicit padding: {self.padding}")
        out_hw = [
            (size + lo + hi - k) // s + 1
            for size, (lo, hi), k, s in zip(x.shape[1:3], pads, kernel_size, strides)
        ]
        if performance.conv_as_matmul(out_hw, kernel_size, strides):
            y = _conv_as_patches_matmul(x, kernel, pads, strides, out_hw)
        else:  # what nn.Conv runs
            y = jax.lax.conv_general_dilated(
                x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        if bias is not None:
            y = y + bias
        return y


def _conv_as_patches_matmul(x, kernel, pads, strides, out_hw):
    """Patches [B, H', W', kh*kw*C] (strided slices of the padded input, in the kernel's
    (kh, kw, C) order) @ kernel [kh*kw*C, O]. The gradient of a slice is a pad, so the
    backward pass is matrix products plus adds, no convolution."""
    kh, kw, c, o = kernel.shape
    (sh, sw), (ho, wo) = strides, out_hw
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    patches = [
        x[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = patches[0] if len(patches) == 1 else jnp.concatenate(patches, axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * c, o))
