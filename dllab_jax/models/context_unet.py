"""ContextUnet: the eps-prediction network of the Freiburg DL Lab diffusion exercise.

The U-Net of the DeepLearning.AI "How Diffusion Models Work" course (after TeaPearce's
Conditional_Diffusion_MNIST), with its one context MLP replaced by one per concept as in the
Okawa et al. (2023) shape / colour / size setting: concept i (raw values [B, d_i]) gets its own
`EmbedFC(d_i, 2F)` and `EmbedFC(d_i, F)`, and the per-concept embeddings are summed.

Shapes for 28x28 RGB inputs, F = `features` (n_feat), NHWC:

  x [B, 28, 28, 3] (noisy image in the model range [-1, 1])
    init_conv  ResidualConvBlock(3 -> F, residual)        -> x0     [B, 28, 28, F]
    down1      2 x ResidualConvBlock(F -> F), maxpool 2     -> d1     [B, 14, 14, F]
    down2      2 x ResidualConvBlock(F -> 2F), maxpool 2    -> d2     [B, 7, 7, 2F]
    to_vec     avgpool 7, GELU                              -> h      [B, 1, 1, 2F]
  t [B] (= t / T) -> timeembed1 / timeembed2                -> temb1 [B,1,1,2F], temb2 [B,1,1,F]
  concepts [B, d_i] -> sum_i contextembed1_i / _2_i         -> cemb1 [B,1,1,2F], cemb2 [B,1,1,F]
    up0        ConvT(2F, 7x7, stride 7), GroupNorm(8), ReLU -> u0     [B, 7, 7, 2F]
    up1        UnetUp(cemb1 * u0 + temb1, skip d2)          -> u1     [B, 14, 14, F]
    up2        UnetUp(cemb2 * u1 + temb2, skip d1)          -> u2     [B, 28, 28, F]
    out        concat(u2, x0) -> Conv3x3(F), GroupNorm(8), ReLU, Conv3x3(3) -> eps [B, 28, 28, 3]

Numerics follow PyTorch: BatchNorm momentum 0.9 (torch 0.1) and epsilon 1e-5, GroupNorm epsilon
1e-5, exact (erf) GELU, residual sums divided by 1.414 as the course code. One difference: flax
updates the running variance with the biased batch variance, torch with the unbiased one (a
relative difference of 1 / (n - 1) per update, n = B * H * W).

Names follow the torch attributes with each Sequential index replaced by a layer name
(init_conv.conv1.0 / .1 -> init_conv/conv1, bn1; down1.model.0 -> down1/block1; up1.model.0 ->
up1/upconv; up0.0 / .1 -> up0_conv, up0_norm; out.0 / .1 / .3 -> out_conv1, out_norm,
out_conv2; the i-th concept MLP contextembed1[i] -> contextembed1_i); `torch_to_flax` in
tests/test_diffusion.py is the full mapping. torch stores a transposed conv's kernel as
[in, out, kh, kw]; flax applies [kh, kw, in, out] spatially flipped.

Classifier-free guidance (`null_concepts=True`): each concept owns two learned null embeddings
(one per embedding width, 2F and F), and `drop_mask` swaps a concept's embeddings for its nulls.
The nulls live in embedding space rather than as a null input value because a raw value (e.g.
size 0.0) could be a real concept value; they start at zero, so a dropped concept initially
adds nothing to the concept sum.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dllab_jax import registry
from dllab_jax.models import layers

# torch's nn.GELU() is the exact erf form.
_gelu = functools.partial(nn.gelu, approximate=False)


class ResidualConvBlock(nn.Module):
    """(3x3 conv -> BatchNorm -> GELU) twice, optionally residual: [B,H,W,C] -> [B,H,W,features].

    With `is_res`, the output is (x + x2) / 1.414 when the widths match and (x1 + x2) / 1.414
    otherwise (x1, x2 the outputs of the first and second conv stage), as the original
    ContextUnet code.

    Attributes:
      features: output width.
      is_res: add the residual.
      dtype: compute dtype.
    """

    features: int
    is_res: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        stages = []
        y = x
        for i in (1, 2):
            y = nn.Conv(
                self.features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name=f"conv{i}"
            )(y)
            y = layers.torch_batch_norm(train, self.dtype, f"bn{i}")(y)
            y = _gelu(y)
            stages.append(y)
        x1, x2 = stages
        if not self.is_res:
            return x2
        shortcut = x if x.shape[-1] == self.features else x1
        return (shortcut + x2) / 1.414


class UnetDown(nn.Module):
    """Two ResidualConvBlocks (not residual) then 2x2 max-pool: [B,H,W,C] -> [B,H/2,W/2,F]."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = ResidualConvBlock(self.features, dtype=self.dtype, name="block1")(x, train=train)
        x = ResidualConvBlock(self.features, dtype=self.dtype, name="block2")(x, train=train)
        return layers.max_pool_2x2(x)


class UnetUp(nn.Module):
    """concat(x, skip) -> 2x2 stride-2 ConvTranspose -> two ResidualConvBlocks.

    [B, H, W, C] and skip [B, H, W, C_s] -> [B, 2H, 2W, features].
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, skip: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = jnp.concatenate([x, skip], axis=-1)
        x = layers.PatchConvTranspose(self.features, (2, 2), dtype=self.dtype, name="upconv")(x)
        x = ResidualConvBlock(self.features, dtype=self.dtype, name="block1")(x, train=train)
        x = ResidualConvBlock(self.features, dtype=self.dtype, name="block2")(x, train=train)
        return x


class EmbedFC(nn.Module):
    """Dense -> GELU -> Dense: [B, d] -> [B, features]."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.Dense(self.features, dtype=self.dtype, name="fc1")(x)
        x = _gelu(x)
        return nn.Dense(self.features, dtype=self.dtype, name="fc2")(x)


@registry.models.register("context_unet")
class ContextUnet(nn.Module):
    """Concept-conditioned eps-prediction U-Net (structure and shapes in the module docstring).

    At the defaults (F = 256, concepts of widths 2, 3, 1) it has 32,878,595 parameters, as
    the PyTorch course model with the same concept MLPs (up0's 7x7 transposed conv alone has
    12.8M); `null_concepts` adds 3 * 768 = 2,304. BatchNorm running statistics live in the
    `batch_stats` collection.

    Attributes:
      in_channels: image channels (output channels too).
      features: base width F (n_feat); a multiple of 8 for GroupNorm(8).
      image_size: square input side; a multiple of 4 (two poolings, then one average pool of
        side image_size / 4, undone by up0's stride).
      concept_dims: raw value width of each concept, e.g. (2, 3, 1) for a one-hot shape, an
        RGB colour and a scalar size.
      null_concepts: own a learned null embedding per concept and accept `drop_mask`.
      dtype: compute dtype; parameters stay float32.
    """

    in_channels: int = 3
    features: int = 256
    image_size: int = 28
    concept_dims: Sequence[int] = (2, 3, 1)
    null_concepts: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        t: jnp.ndarray,
        concepts: Sequence[jnp.ndarray],
        *,
        drop_mask: jnp.ndarray | None = None,
        train: bool = False,
    ) -> jnp.ndarray:
        """Predicts the noise in `x`.

        Args:
          x: [B, image_size, image_size, in_channels] noisy images in the model range [-1, 1].
          t: [B] (or a scalar, broadcast) float timestep divided by T, in [0, 1].
          concepts: one [B, d_i] float array per concept, d_i = concept_dims[i].
          drop_mask: [B, num_concepts] bool, True replaces that concept's embedding by its
            learned null; [B] drops all concepts of an example. Only with `null_concepts`.
          train: BatchNorm uses batch statistics and updates `batch_stats` (pass
            `mutable=["batch_stats"]`).

        Returns:
          [B, image_size, image_size, in_channels] float32 eps prediction.
        """
        f = self.features
        b = x.shape[0]
        expected = (self.image_size, self.image_size, self.in_channels)
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ValueError(
                f"x has shape {x.shape}; expected [B, {', '.join(map(str, expected))}]"
            )
        if self.image_size % 4:
            raise ValueError(f"image_size={self.image_size} is not a multiple of 4")
        if len(concepts) != len(self.concept_dims):
            raise ValueError(
                f"got {len(concepts)} concept arrays for concept_dims={tuple(self.concept_dims)}"
            )
        for i, (c, d) in enumerate(zip(concepts, self.concept_dims)):
            if c.shape != (b, d):
                raise ValueError(f"concept {i} has shape {c.shape}; expected ({b}, {d})")
        num = len(self.concept_dims)
        if drop_mask is not None:
            if not self.null_concepts:
                raise ValueError("drop_mask needs a model built with null_concepts=True")
            drop_mask = jnp.asarray(drop_mask, bool)
            if drop_mask.ndim == 1:  # [B]: drop every concept of an example
                drop_mask = jnp.broadcast_to(drop_mask[:, None], (drop_mask.shape[0], num))
            if drop_mask.shape != (b, num):
                raise ValueError(f"drop_mask has shape {drop_mask.shape}; expected ({b}, {num})")

        block = functools.partial(ResidualConvBlock, dtype=self.dtype)
        x = x.astype(self.dtype)
        x0 = block(f, is_res=True, name="init_conv")(x, train=train)
        down1 = UnetDown(f, dtype=self.dtype, name="down1")(x0, train=train)
        down2 = UnetDown(2 * f, dtype=self.dtype, name="down2")(down1, train=train)
        # AvgPool2d(7) over the whole 7x7 map, i.e. a global mean.
        hidden = _gelu(jnp.mean(down2, axis=(1, 2), keepdims=True))

        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32).reshape(-1), (b,))[:, None]
        temb1 = EmbedFC(2 * f, dtype=self.dtype, name="timeembed1")(t.astype(self.dtype))
        temb2 = EmbedFC(f, dtype=self.dtype, name="timeembed2")(t.astype(self.dtype))
        cemb1, cemb2 = self._concept_embeddings(concepts, drop_mask)

        def as_map(v):  # [B, C] -> [B, 1, 1, C], broadcast over the feature map
            return v[:, None, None, :]

        side = self.image_size // 4
        u0 = layers.PatchConvTranspose(2 * f, (side, side), dtype=self.dtype, name="up0_conv")(
            hidden
        )
        u0 = nn.relu(self._group_norm("up0_norm")(u0))
        u1 = UnetUp(f, dtype=self.dtype, name="up1")(
            as_map(cemb1) * u0 + as_map(temb1), down2, train=train
        )
        u2 = UnetUp(f, dtype=self.dtype, name="up2")(
            as_map(cemb2) * u1 + as_map(temb2), down1, train=train
        )
        y = jnp.concatenate([u2, x0], axis=-1)
        y = nn.Conv(f, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="out_conv1")(y)
        y = nn.relu(self._group_norm("out_norm")(y))
        y = nn.Conv(
            self.in_channels, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="out_conv2"
        )(y)
        return y.astype(jnp.float32)

    def _group_norm(self, name: str) -> nn.GroupNorm:
        return nn.GroupNorm(
            num_groups=8, epsilon=1e-5, dtype=self.dtype, use_fast_variance=False, name=name
        )

    def _concept_embeddings(
        self, concepts: Sequence[jnp.ndarray], drop_mask: jnp.ndarray | None
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Sums the per-concept embeddings: ([B, 2F], [B, F]); drop_mask is [B, K] or None."""
        f = self.features
        b = concepts[0].shape[0]
        cemb1 = jnp.zeros((b, 2 * f), self.dtype)
        cemb2 = jnp.zeros((b, f), self.dtype)
        for i, c in enumerate(concepts):
            c = c.astype(self.dtype)
            e1 = EmbedFC(2 * f, dtype=self.dtype, name=f"contextembed1_{i}")(c)
            e2 = EmbedFC(f, dtype=self.dtype, name=f"contextembed2_{i}")(c)
            if self.null_concepts:
                null1 = self.param(f"null_embed1_{i}", nn.initializers.zeros, (2 * f,))
                null2 = self.param(f"null_embed2_{i}", nn.initializers.zeros, (f,))
                if drop_mask is not None:
                    keep = ~drop_mask[:, i : i + 1]
                    e1 = jnp.where(keep, e1, null1.astype(self.dtype))
                    e2 = jnp.where(keep, e2, null2.astype(self.dtype))
            cemb1 = cemb1 + e1
            cemb2 = cemb2 + e2
        return cemb1, cemb2
