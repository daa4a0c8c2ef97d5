"""Segmentation heads on a frozen DINO ViT (Freiburg DL Lab 2023, exercise 2).

Each head maps the patch-token map [B, h, w, D] of `DinoViT` to class logits [B, h, w, C] at
patch resolution; `FrozenBackboneSegmenter` runs the frozen backbone, a head, and upsamples
bilinearly to the input size. The four heads:

* "linear", `ConvHead(kernel_size=1)`: a 1x1 conv D -> C with bias (a per-patch linear
  classifier).
* "conv", `ConvHead(kernel_size=3)`: one 3x3 conv D -> C with bias, zero padding 1 (sees the 8
  neighbouring patches).
* `TransformerHead` (a one-block Segmenter mask transformer, Strudel et al. 2021): C
  learnable class embeddings `cls_emb` of width D are appended to the N = h*w patch tokens;
  one pre-norm block mixes the N + C tokens: x + attn(norm1(x)), with `num_heads` (6) heads,
  no query/key/value bias, output projection with bias; then `norm2` and separate 2-layer
  MLPs for the patch tokens (`patch_mlp`) and the class tokens (`class_mlp`), each
  Linear(D, D) -> exact GELU -> Linear(D, D) (hidden width D, no residual around them: they
  play the role of Segmenter's `proj_patch` / `proj_classes` projections). Both sets are
  L2-normalised over D (as Segmenter does), the masks are patches @ classes^T (cosine
  similarities, [B, N, C]), and `mask_norm`, a LayerNorm over the C classes, turns them into
  logits.
* `TransformerHead(shared_qk=True)` ("shared_qk"): the same with one Dense `attn/qk` giving
  both queries and keys (q == k, so attention scores are symmetric before the softmax).

Parameter counts at D = 384, C = 21 (tests assert them): linear 8,085; conv 72,597;
transformer 1,191,210; shared_qk 1,043,754.

Training the heads alone: `config.optimizer.trainable = "head/.*"` gives the backbone no
updates (no weight decay either) and, through the model's `frozen`, runs it behind
`jax.lax.stop_gradient` in inference mode.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from dllab_jax import registry
from dllab_jax.errors import UserError
from dllab_jax.models.dino_vit import DinoViT, Mlp, MultiHeadSelfAttention
from dllab_jax.models.layers import ComposedModule, stop_gradient_if

# Segmenter initialises its class embeddings with a truncated normal of std 0.02.
_INIT = nn.initializers.truncated_normal(stddev=0.02)


class ConvHead(nn.Module):
    """One conv `conv` with bias, zero padding kernel_size // 2: [B, h, w, D] -> [B, h, w, C].

    kernel_size 1 is the linear head (a per-patch linear classifier), 3 the conv head.

    Attributes:
      num_classes: C.
      kernel_size: the square kernel's side (odd).
      dtype: compute dtype.
    """

    num_classes: int
    kernel_size: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Logits [B, h, w, C] from features [B, h, w, D] (`train` unused: no dropout)."""
        del train
        k, pad = self.kernel_size, self.kernel_size // 2
        return nn.Conv(
            self.num_classes,
            (k, k),
            padding=((pad, pad), (pad, pad)),
            dtype=self.dtype,
            name="conv",
        )(features)


def _l2_normalize(x: jnp.ndarray) -> jnp.ndarray:
    """x / max(||x||, 1e-12) over the last axis, as torch's F.normalize (finite at x = 0)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
    return (x / jnp.maximum(norm, 1e-12)).astype(x.dtype)


class TransformerHead(nn.Module):
    """One-block mask transformer over patch and class tokens (see the module docstring).

    Parameters: `cls_emb` [1, C, D], `norm1`, `attn` (`query`, `key` or shared `qk`,
    `value`, `proj`), `norm2`, `patch_mlp` and `class_mlp` (`fc1`, `fc2`), `mask_norm` [C].

    Attributes:
      num_classes: C.
      num_heads: attention heads (D must be divisible by it).
      shared_qk: one projection for queries and keys.
      layer_norm_eps: epsilon of the LayerNorms (torch's default 1e-5).
      dtype: compute dtype.
    """

    num_classes: int
    num_heads: int = 6
    shared_qk: bool = False
    layer_norm_eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Logits [B, h, w, C] from features [B, h, w, D] (`train` unused: no dropout)."""
        del train
        b, h, w, d = features.shape
        n, c = h * w, self.num_classes
        norm = functools.partial(
            nn.LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype, use_fast_variance=False
        )
        cls_emb = self.param("cls_emb", _INIT, (1, c, d))
        x = features.reshape(b, n, d).astype(self.dtype)
        x = jnp.concatenate([x, jnp.broadcast_to(cls_emb.astype(self.dtype), (b, c, d))], 1)
        y = MultiHeadSelfAttention(
            self.num_heads, qkv_bias=False, shared_qk=self.shared_qk, dtype=self.dtype, name="attn"
        )(norm(name="norm1")(x))
        x = norm(name="norm2")(x + y)
        patches = Mlp(d, dtype=self.dtype, name="patch_mlp")(x[:, :n])
        classes = Mlp(d, dtype=self.dtype, name="class_mlp")(x[:, n:])
        masks = jnp.einsum("bnd,bcd->bnc", _l2_normalize(patches), _l2_normalize(classes))
        masks = norm(name="mask_norm")(masks)
        return masks.reshape(b, h, w, c)


HEADS = {
    "linear": functools.partial(ConvHead, kernel_size=1),
    "conv": functools.partial(ConvHead, kernel_size=3),
    "transformer": functools.partial(TransformerHead, shared_qk=False),
    "shared_qk": functools.partial(TransformerHead, shared_qk=True),
}


@registry.models.register("dino_segmenter")
class FrozenBackboneSegmenter(ComposedModule):
    """A `DinoViT` (`backbone`) -> segmentation head (`head`) -> bilinear upsampling.

    The backbone is a nested sub-config (`config.model.backbone`, `DinoViT`'s arguments), so
    the ViT is declared once, in dino_vit.py. By default (`frozen=("backbone",)`) it runs in
    inference mode and its features pass through `stop_gradient`, so only the head learns
    (its parameters load by name from `dllab_jax.weights.dino`); in a run, `frozen` follows
    `config.optimizer.trainable` ("head/.*": frozen; ".*": the same model trains end to end,
    the offline stand-in for DINO's pre-training). Logits are resized from the patch grid to
    the input size with `jax.image.resize(..., "bilinear")`: half-pixel centres, which for
    upsampling equals torch's `interpolate(mode="bilinear", align_corners=False)`.

    Attributes:
      num_classes: C.
      head: "linear", "conv", "transformer" or "shared_qk".
      head_num_heads: attention heads of the transformer heads.
      backbone: `DinoViT`'s arguments (patch_size, hidden_size, depth, num_heads, mlp_ratio,
        qkv_bias, layer_norm_eps, pretrain_image_size); missing keys take its defaults
        (ViT-S/16).
      frozen: ("backbone",): stop_gradient on the features and the backbone in inference
        mode; (): the backbone trains with the head. Not a config key: the training loop
        sets it from `config.optimizer.trainable` (`optim.with_frozen_submodules`).
      dtype: compute dtype of backbone and head; logits are returned in float32.
    """

    num_classes: int
    head: str = "linear"
    head_num_heads: int = 6
    backbone: Mapping[str, Any] = FrozenDict()
    frozen: tuple[str, ...] = ("backbone",)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Returns per-pixel logits.

        Args:
          images: [B, H, W, 3] float32, normalised; H and W multiples of the patch size.
          train: passed to the head, and to the backbone when it is not frozen.

        Returns:
          [B, H, W, num_classes] float32 logits.
        """
        if self.head not in HEADS:
            raise UserError(f"config.model.head is {self.head!r}; use one of {sorted(HEADS)}")
        backbone = DinoViT(**self.backbone, dtype=self.dtype, name="backbone")
        frozen = "backbone" in self.frozen
        # Frozen: no gradient reaches the backbone, so the head trains on fixed features.
        features = stop_gradient_if(frozen, backbone(images, train=train and not frozen))
        if self.head in ("transformer", "shared_qk"):
            head = HEADS[self.head](
                self.num_classes, num_heads=self.head_num_heads, dtype=self.dtype, name="head"
            )
        else:
            head = HEADS[self.head](self.num_classes, dtype=self.dtype, name="head")
        logits = head(features, train=train).astype(jnp.float32)
        b, height, width, _ = images.shape
        return jax.image.resize(logits, (b, height, width, self.num_classes), "bilinear")
