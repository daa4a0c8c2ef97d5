"""The Vision Transformer of the UvA deep learning tutorials (15 in JAX, 11 in PyTorch).

Image -> non-overlapping patches -> Dense embedding, a learnable CLS token and position
embedding, pre-LayerNorm transformer blocks, and a LayerNorm + Dense head on the CLS token.
The trunk is `ViTEncoder`, held by `ViT` under the attribute name `encoder` (the head is
`head_norm` + `head`), so later experiments reuse it and load its weights by name.

Numerics follow the PyTorch version: LayerNorm epsilon 1e-5, exact (erf) GELU, dropout on the
attention weights inside attention as `nn.MultiheadAttention(dropout=...)` does. Patches are
flattened in (ph, pw, C) order as in the JAX tutorial; the PyTorch one uses (C, ph, pw), so
its `input_layer.weight` columns must be permuted when weights are copied over.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dllab_jax import registry
from dllab_jax.models import layers


def patchify(images: jnp.ndarray, patch_size: int) -> jnp.ndarray:
    """Cuts images into non-overlapping square patches, row-major over the patch grid.

    Args:
      images: [B, H, W, C]; H and W multiples of `patch_size`.
      patch_size: side p of a patch in pixels.

    Returns:
      [B, (H/p) * (W/p), p * p * C], each patch flattened in (ph, pw, C) order.
    """
    b, h, w, c = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of patch_size={p}")
    x = images.reshape(b, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, H/p, W/p, p, p, C]
    return x.reshape(b, (h // p) * (w // p), p * p * c)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + Drop(MHA(LN(x))), then x + Drop(MLP(LN(x))).

    Attributes:
      hidden_dim: width of the MLP's hidden layer.
      num_heads: attention heads; they split the input width (embed_dim / num_heads each).
      dropout: rate for attention weights, both residual branches and the MLP's hidden layer.
      dtype: compute dtype.
    """

    hidden_dim: int
    num_heads: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """[B, T, D] -> [B, T, D]."""
        embed_dim = x.shape[-1]
        norm = functools.partial(
            nn.LayerNorm, epsilon=1e-5, dtype=self.dtype, use_fast_variance=False
        )
        # One Dropout module serves all three sites: each call draws a fresh 'dropout' key.
        drop = functools.partial(nn.Dropout(self.dropout), deterministic=not train)
        y = norm(name="norm1")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            dropout_rate=self.dropout,
            # torch drops attention weights independently per head and query, not broadcast.
            broadcast_dropout=False,
            name="attn",
        )(y, y, deterministic=not train)
        x = x + drop(y)
        y = norm(name="norm2")(x)
        y = nn.Dense(self.hidden_dim, dtype=self.dtype, name="mlp_in")(y)
        y = nn.gelu(y, approximate=False)  # torch nn.GELU() is the exact erf form
        y = drop(y)
        y = nn.Dense(embed_dim, dtype=self.dtype, name="mlp_out")(y)
        return x + drop(y)


class ViTSizes(nn.Module):
    """The arguments `ViTEncoder` and `ViT` share (a fields-only base: `layers.fields_of`).

    Attributes:
      patch_size: side of a square patch in pixels.
      embed_dim: token width D.
      hidden_dim: width of each block's MLP hidden layer.
      num_heads: attention heads per block.
      num_layers: number of blocks.
      dropout: dropout rate everywhere (after adding positions, and inside the blocks).
      dtype: compute dtype (parameters stay float32).
    """

    patch_size: int = 4
    embed_dim: int = 256
    hidden_dim: int = 512
    num_heads: int = 8
    num_layers: int = 6
    dropout: float = 0.2
    dtype: Any = jnp.float32


class ViTEncoder(ViTSizes):
    """The ViT trunk: patchify, embed, prepend CLS, add positions, transformer blocks.

    The position embedding has one row per token of the image size seen at `init`; applying
    the model to another size fails (flax checks parameter shapes). Attributes: `ViTSizes`.
    """

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns all tokens after the last block (not normalised; the head normalises).

        Args:
          images: [B, H, W, C] float32, normalised.
          train: apply dropout.

        Returns:
          [B, 1 + N, embed_dim], token 0 the CLS token, N = (H/p) * (W/p) patches row-major.
        """
        x = patchify(images, self.patch_size)  # [B, N, p*p*C]
        x = nn.Dense(self.embed_dim, dtype=self.dtype, name="patch_embed")(x)
        b, n, d = x.shape
        # Normal with stddev 1, as both UvA versions (torch.randn) initialise them.
        init = nn.initializers.normal(stddev=1.0)
        cls_token = self.param("cls_token", init, (1, 1, d))
        pos_embedding = self.param("pos_embedding", init, (1, 1 + n, d))
        cls_token = jnp.broadcast_to(cls_token.astype(x.dtype), (b, 1, d))
        x = jnp.concatenate([cls_token, x], axis=1) + pos_embedding.astype(x.dtype)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        for i in range(self.num_layers):
            x = EncoderBlock(
                self.hidden_dim, self.num_heads, self.dropout, dtype=self.dtype, name=f"block{i}"
            )(x, train=train)
        return x


@registry.models.register("vit")
class ViT(ViTSizes, kw_only=True):
    """UvA ViT classifier: `encoder` -> CLS token -> `head_norm` (LayerNorm) -> `head` (Dense).

    Defaults are the tutorial's CIFAR-10 settings (3,195,146 parameters at 10 classes on
    32x32 inputs). Keyword arguments only (`ViT(num_classes=10)`).

    Attributes:
      num_classes: number of output logits.
      patch_size, embed_dim, hidden_dim, num_heads, num_layers, dropout, dtype: `ViTSizes`.
    """

    num_classes: int

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns logits.

        Args:
          images: [B, H, W, C] float32, normalised; H, W multiples of `patch_size`.
          train: apply dropout.

        Returns:
          [B, num_classes] float32 logits.
        """
        tokens = ViTEncoder(**layers.fields_of(ViTSizes, self), name="encoder")(images, train=train)
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, use_fast_variance=False, name="head_norm")(
            tokens[:, 0]
        )
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return x.astype(jnp.float32)
