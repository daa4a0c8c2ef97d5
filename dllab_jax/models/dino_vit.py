"""The DINO ViT backbone (Caron et al. 2021) as a frozen feature extractor for dense tasks.

`DinoViT` is the network of the original DINO `VisionTransformer` (the weights published as
`dino_deitsmall16_pretrain.pth`), which is also Hugging Face's `ViTModel` for
`facebook/dino-vits16`. Defaults are ViT-S/16: 12 pre-LN blocks of width 384, 6 heads, MLP
width 1536, 14x14 position grid + CLS; 21,665,664 parameters. It returns the patch tokens
after the final LayerNorm (CLS dropped) as a feature map:

  images [B, H, W, 3] -> patch_embed (Conv k=s=p) -> [CLS; patches] + pos_embed
    -> blocks_0 .. blocks_{depth-1} -> norm -> drop CLS -> [B, H/p, W/p, hidden_size]

Parameter names mirror the original DINO/timm names (query, key and value split, since
DINO fuses them); `dllab_jax/weights/dino.py` maps both checkpoint layouts onto them:

  ours                      original DINO           HF ViTModel (hub file names)
  patch_embed [p,p,3,D]     patch_embed.proj        embeddings.patch_embeddings.projection
  cls_token [1,1,D]         cls_token               embeddings.cls_token
  pos_embed [1,1+g*g,D]     pos_embed               embeddings.position_embeddings
  blocks_i/norm1            blocks.i.norm1          encoder.layer.i.layernorm_before
  blocks_i/attn/query       blocks.i.attn.qkv[:D]   encoder.layer.i.attention.attention.query
  blocks_i/attn/key         .. qkv[D:2D]            encoder.layer.i.attention.attention.key
  blocks_i/attn/value       .. qkv[2D:]             encoder.layer.i.attention.attention.value
  blocks_i/attn/proj        blocks.i.attn.proj      encoder.layer.i.attention.output.dense
  blocks_i/norm2            blocks.i.norm2          encoder.layer.i.layernorm_after
  blocks_i/mlp/fc1          blocks.i.mlp.fc1        encoder.layer.i.intermediate.dense
  blocks_i/mlp/fc2          blocks.i.mlp.fc2        encoder.layer.i.output.dense
  norm                      norm                    layernorm

(Dense `kernel` = torch `weight` transposed, Conv `kernel` = `weight` OIHW -> HWIO,
LayerNorm `scale` = `weight`.)

Numerics: LayerNorm with `layer_norm_eps` (1e-6 in DINO; a HF config.json may carry
ViTConfig's default 1e-12 instead, a negligible difference), two-pass variance; exact (erf)
GELU; attention softmax in float32.
For an input whose patch grid differs from the pre-training grid g x g, the position
embeddings of the patches are resized bicubically to (H/p, W/p) exactly as HF `ViTModel` with
`interpolate_pos_encoding=True` does: torch `interpolate(mode="bicubic", size=...,
align_corners=False)`, i.e. Keys' cubic with a = -0.75, half-pixel centres, border-clamped
taps, no antialiasing. (`jax.image.resize` uses a = -0.5, hence `bicubic_resize_matrix`.) The
original DINO repository resizes with `scale_factor=(w0 + 0.1) / g`, which samples at slightly
different positions; we follow HF. There is no dropout or stochastic depth: the model is
used frozen.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# timm / DINO initialise Linear weights and the embeddings with truncated normals of std 0.02.
_INIT = nn.initializers.truncated_normal(stddev=0.02)


def _cubic_weight(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at distances |x| < 2 (as torch's upsample_bicubic2d)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def bicubic_resize_matrix(in_size: int, out_size: int, a: float = -0.75) -> np.ndarray:
    """The linear map of torch's 1-D bicubic resize (align_corners=False, no antialias).

    Output sample i reads the input at src = (i + 0.5) * in/out - 0.5 (not clamped, as torch
    does for cubic) with the four taps floor(src) - 1 .. floor(src) + 2 clamped to the border,
    so a 2-D resize is `W_h @ X @ W_w^T`, exact up to float rounding.

    Args:
      in_size: input length.
      out_size: output length.
      a: the cubic's free parameter; torch uses -0.75.

    Returns:
      [out_size, in_size] float64; rows sum to 1.
    """
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    base = np.floor(src)
    t = src - base
    matrix = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    for k in range(4):  # taps at base - 1, base, base + 1, base + 2
        weight = _cubic_weight(t + 1 - k, a)
        index = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(matrix, (rows, index), weight)
    return matrix


def sincos2d_pos_embed(grid: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed 2-D sine-cosine position embeddings [1, 1 + grid^2, width], CLS position zero.

    A quarter of the channels each for sin(x w), cos(x w), sin(y w), cos(y w) with
    w_k = temperature^(-k / (width / 4)), as MAE and big_vision's `posemb="sincos2d"`: every
    token knows where it is from the first step, where a 0.02-std random start leaves the
    model nearly blind to the layout until the embedding has grown (Beyer et al. 2022,
    "Better plain ViT baselines for ImageNet-1k", train with it from scratch).
    """
    if width % 4:
        raise ValueError(f"sincos2d position embeddings need a width divisible by 4, got {width}")
    y, x = np.mgrid[:grid, :grid].astype(np.float64)
    omega = temperature ** -(np.arange(width // 4) / (width // 4))
    x = x.reshape(-1, 1) * omega
    y = y.reshape(-1, 1) * omega
    patches = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    table = np.concatenate([np.zeros((1, width)), patches], axis=0)
    return table[None].astype(np.float32)


def interpolate_pos_embed(pos_embed: jnp.ndarray, grid_h: int, grid_w: int) -> jnp.ndarray:
    """Resizes ViT position embeddings to another patch grid, as HF `interpolate_pos_encoding`.

    Args:
      pos_embed: [1, 1 + g*g, D], the CLS position first, then a square g x g grid row-major.
      grid_h: patch rows of the input.
      grid_w: patch columns of the input.

    Returns:
      [1, 1 + grid_h * grid_w, D] in pos_embed's dtype; the input itself when the grid is g x g.
    """
    _, n, d = pos_embed.shape
    g = math.isqrt(n - 1)
    if g * g != n - 1:
        raise ValueError(f"pos_embed has {n - 1} patch positions, not a square grid")
    if (grid_h, grid_w) == (g, g):
        return pos_embed
    grid = pos_embed[0, 1:].reshape(g, g, d).astype(jnp.float32)
    w_h = jnp.asarray(bicubic_resize_matrix(g, grid_h), jnp.float32)
    w_w = jnp.asarray(bicubic_resize_matrix(g, grid_w), jnp.float32)
    # HIGHEST: no TF32/bf16 passes on accelerators, so the resize stays float32-exact.
    grid = jnp.einsum("ia,jb,abd->ijd", w_h, w_w, grid, precision=jax.lax.Precision.HIGHEST)
    patches = grid.reshape(1, grid_h * grid_w, d).astype(pos_embed.dtype)
    return jnp.concatenate([pos_embed[:, :1], patches], axis=1)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with separate `query`, `key`, `value` Dense layers and a `proj` output.

    softmax(q k^T / sqrt(head_dim)) v per head, softmax in float32. With `shared_qk` one Dense
    `qk` gives both queries and keys (q == k). Queries and keys are sown into the
    `intermediates` collection as `q` and `k` (free unless that collection is mutable).

    Attributes:
      num_heads: heads; they split the width D (D / num_heads each).
      qkv_bias: biases on the query/key/value projections (the output projection always has one).
      shared_qk: one projection for queries and keys.
      dtype: compute dtype.
    """

    num_heads: int
    qkv_bias: bool = True
    shared_qk: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, T, D] -> [B, T, D]."""
        b, t, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}")
        head_dim = d // self.num_heads
        dense = functools.partial(
            nn.Dense, d, use_bias=self.qkv_bias, dtype=self.dtype, kernel_init=_INIT
        )
        if self.shared_qk:
            q = k = dense(name="qk")(x)
        else:
            q = dense(name="query")(x)
            k = dense(name="key")(x)
        v = dense(name="value")(x)
        self.sow("intermediates", "q", q)
        self.sow("intermediates", "k", k)
        q, k, v = (y.reshape(b, t, self.num_heads, head_dim) for y in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (head_dim**-0.5)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        y = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, d)
        return nn.Dense(d, dtype=self.dtype, kernel_init=_INIT, name="proj")(y)


class Mlp(nn.Module):
    """`fc1` -> exact GELU -> `fc2` (back to the input width).

    Attributes:
      hidden_dim: width of fc1's output.
      dtype: compute dtype.
    """

    hidden_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[..., D] -> [..., D]."""
        y = nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=_INIT, name="fc1")(x)
        y = nn.gelu(y, approximate=False)  # torch nn.GELU() / HF "gelu" are the erf form
        return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=_INIT, name="fc2")(y)


def layer_norm(eps: float, dtype: Any, name: str) -> nn.LayerNorm:
    """torch-equivalent LayerNorm (two-pass variance) with parameters `scale`, `bias`."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


class DinoBlock(nn.Module):
    """Pre-LN ViT block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Attributes:
      num_heads: attention heads.
      mlp_dim: MLP hidden width.
      qkv_bias: biases on the query/key/value projections.
      layer_norm_eps: LayerNorm epsilon.
      dtype: compute dtype.
    """

    num_heads: int
    mlp_dim: int
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B, T, D] -> [B, T, D]."""
        y = layer_norm(self.layer_norm_eps, self.dtype, "norm1")(x)
        y = MultiHeadSelfAttention(
            self.num_heads, qkv_bias=self.qkv_bias, dtype=self.dtype, name="attn"
        )(y)
        x = x + y
        y = layer_norm(self.layer_norm_eps, self.dtype, "norm2")(x)
        return x + Mlp(self.mlp_dim, dtype=self.dtype, name="mlp")(y)


class DinoViT(nn.Module):
    """DINO ViT backbone returning the normalised patch-token map (see the module docstring).

    Attributes:
      patch_size: side p of the square patches (and the stride of the patch embedding).
      hidden_size: token width D.
      depth: number of blocks.
      num_heads: attention heads per block.
      mlp_ratio: MLP hidden width / D (the MLP width is int(D * mlp_ratio)).
      qkv_bias: biases on the query/key/value projections.
      layer_norm_eps: epsilon of every LayerNorm.
      pretrain_image_size: the square image side the position embeddings were trained for;
        the parameter grid is (pretrain_image_size / p)^2 + 1 positions.
      stem_widths: () for DINO's layout (one linear p x p patch projection). Otherwise a
        convolutional stem before it (Xiao et al. 2021, "Early convolutions help transformers
        see better"): per width a 3x3 stride-2 conv, LayerNorm and GELU (`stem_i/...`), after
        which `patch_embed` projects (p / 2^len) x (p / 2^len) patches. Not in DINO's weights;
        the offline stand-in backbone uses it (see configs/seg_heads.py).
      stem_depth: 3x3 convs per stem width: the stride-2 one, then `stem_depth - 1` of stride
        1 (`stem_i_j/...`, each with LayerNorm and GELU), which widen what a patch token sees
        (a receptive field of 7 pixels for two widths at depth 1, 19 at depth 2).
      pos_embed_init: how a fresh model's `pos_embed` starts: "truncated_normal" (std 0.02,
        DINO's and timm's) or "sincos2d" (`sincos2d_pos_embed`, still trained). Loaded weights
        replace it either way; the parameter is the same.
      dtype: compute dtype (parameters stay float32).
    """

    patch_size: int = 16
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    pretrain_image_size: int = 224
    stem_widths: tuple[int, ...] = ()
    stem_depth: int = 1
    pos_embed_init: str = "truncated_normal"
    dtype: Any = jnp.float32

    @property
    def mlp_dim(self) -> int:
        return round(self.hidden_size * self.mlp_ratio)

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns patch features.

        Args:
          images: [B, H, W, 3] float32, normalised (ImageNet mean/std for DINO weights); H and
            W multiples of `patch_size`, any size (position embeddings are resized).
          train: unused (no dropout); kept for the models' common call signature.

        Returns:
          [B, H/p, W/p, hidden_size] in `dtype`: the patch tokens after the final LayerNorm.
        """
        del train
        b, height, width, _ = images.shape
        p, d = self.patch_size, self.hidden_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a multiple of patch_size={p}")
        grid_h, grid_w = height // p, width // p
        x = images.astype(self.dtype)
        reduced = p

        def stem_conv(x, width: int, stride: int, name: str):
            x = nn.Conv(
                width,
                (3, 3),
                strides=(stride, stride),
                padding=((1, 1), (1, 1)),
                dtype=self.dtype,
                kernel_init=nn.initializers.kaiming_normal(),
                name=name,
            )(x)
            return nn.gelu(layer_norm(self.layer_norm_eps, self.dtype, f"{name}_norm")(x))

        for i, width_i in enumerate(self.stem_widths):
            if reduced % 2:
                raise ValueError(f"patch_size={p} is not divisible by 2^{len(self.stem_widths)}")
            reduced //= 2
            x = stem_conv(x, width_i, 2, f"stem_{i}")
            for j in range(1, self.stem_depth):
                x = stem_conv(x, width_i, 1, f"stem_{i}_{j}")
        x = nn.Conv(
            d,
            (reduced, reduced),
            strides=(reduced, reduced),
            padding="VALID",
            dtype=self.dtype,
            name="patch_embed",
        )(x)
        x = x.reshape(b, grid_h * grid_w, d)  # row-major over the grid, as torch's flatten(2)
        grid = self.pretrain_image_size // p
        cls_token = self.param("cls_token", _INIT, (1, 1, d))
        if self.pos_embed_init == "truncated_normal":
            pos_init = _INIT
        elif self.pos_embed_init == "sincos2d":
            pos_init = lambda key, shape: jnp.asarray(sincos2d_pos_embed(grid, d))
        else:
            raise ValueError(
                "pos_embed_init must be 'truncated_normal' or 'sincos2d', "
                f"got {self.pos_embed_init!r}"
            )
        pos_embed = self.param("pos_embed", pos_init, (1, 1 + grid * grid, d))
        cls_token = jnp.broadcast_to(cls_token.astype(self.dtype), (b, 1, d))
        x = jnp.concatenate([cls_token, x], axis=1)
        x = x + interpolate_pos_embed(pos_embed, grid_h, grid_w).astype(self.dtype)
        for i in range(self.depth):
            x = DinoBlock(
                self.num_heads,
                self.mlp_dim,
                qkv_bias=self.qkv_bias,
                layer_norm_eps=self.layer_norm_eps,
                dtype=self.dtype,
                name=f"blocks_{i}",
            )(x)
        x = layer_norm(self.layer_norm_eps, self.dtype, "norm")(x)
        return x[:, 1:].reshape(b, grid_h, grid_w, d)
