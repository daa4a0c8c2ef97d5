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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dllab_jax import performance


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max-pool with stride 2 ('VALID': an odd last row or column is dropped), NHWC."""
    if performance.use_reference_ops():
        return nn.max_pool(x, (2, 2), strides=(2, 2))
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


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
