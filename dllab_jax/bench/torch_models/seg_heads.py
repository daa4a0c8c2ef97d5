"""PyTorch references of the segmentation heads and of the frozen-DINO segmenter
(dllab_jax/models/seg_heads.py); the DINO ViT itself is transformers' `ViTModel`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from flax.core import FrozenDict
from torch import nn

from dllab_jax.models.dino_vit import DinoViT

# DinoViT's arguments and defaults (ViT-S/16), which a `backbone` sub-config overrides.
_DINO_VIT_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(DinoViT)
    if f.name not in ("parent", "name", "dtype")
}


class TorchStemConv(nn.Module):
    """DinoViT's stem layer: 3x3 conv (padding 1) -> LayerNorm over channels -> GELU (flax's
    `nn.gelu`, the tanh form)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.norm = nn.LayerNorm(out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return F.gelu(x, approximate="tanh")


class TorchConvHead(nn.Module):
    """One conv `conv` with bias, zero padding kernel_size // 2: [B, D, h, w] -> [B, C, h, w]."""

    def __init__(self, in_features: int, num_classes: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_features, num_classes, kernel_size, 1, kernel_size // 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)


class TorchSelfAttention(nn.Module):
    """dino_vit.MultiHeadSelfAttention: `query`, `key` (or shared `qk`), `value`, `proj`."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, shared_qk: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.shared_qk = shared_qk
        if shared_qk:
            self.qk = nn.Linear(dim, dim, bias=qkv_bias)
        else:
            self.query = nn.Linear(dim, dim, bias=qkv_bias)
            self.key = nn.Linear(dim, dim, bias=qkv_bias)
        self.value = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y):  # [B, T, D] -> [B, heads, T, D / heads]
            return y.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

        if self.shared_qk:
            q = k = heads(self.qk(x))
        else:
            q, k = heads(self.query(x)), heads(self.key(x))
        # Scales by head_dim ** -0.5, as the Flax attention.
        y = F.scaled_dot_product_attention(q, k, heads(self.value(x)))
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class TorchMlp(nn.Module):
    """`fc1` -> exact GELU -> `fc2` back to the input width (dino_vit.Mlp)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TorchTransformerHead(nn.Module):
    """seg_heads.TransformerHead, the one-block mask transformer: [B, D, h, w] -> [B, C, h, w].

    C class embeddings `cls_emb` join the h*w patch tokens; x = norm2(x + attn(norm1(x)))
    (no query/key/value bias); `patch_mlp` / `class_mlp` (hidden width D, no residual); both
    L2-normalised; masks = patches @ classes^T, then `mask_norm` over the C classes.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_heads: int = 6,
        shared_qk: bool = False,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        d, c = in_features, num_classes
        self.cls_emb = nn.Parameter(torch.empty(1, c, d))
        nn.init.trunc_normal_(self.cls_emb, std=0.02)
        self.norm1 = nn.LayerNorm(d, eps=layer_norm_eps)
        self.attn = TorchSelfAttention(d, num_heads, qkv_bias=False, shared_qk=shared_qk)
        self.norm2 = nn.LayerNorm(d, eps=layer_norm_eps)
        self.patch_mlp = TorchMlp(d, d)
        self.class_mlp = TorchMlp(d, d)
        self.mask_norm = nn.LayerNorm(c, eps=layer_norm_eps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        n, c = h * w, self.cls_emb.shape[1]
        x = features.flatten(2).transpose(1, 2)  # [B, N, D], row-major over the grid
        x = torch.cat([x, self.cls_emb.expand(b, -1, -1)], dim=1)
        x = self.norm2(x + self.attn(self.norm1(x)))
        patches = F.normalize(self.patch_mlp(x[:, :n]), dim=-1)
        classes = F.normalize(self.class_mlp(x[:, n:]), dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # [B, N, C]
        return masks.transpose(1, 2).reshape(b, c, h, w)


def build_head(head: str, in_features: int, num_classes: int, num_heads: int = 6) -> nn.Module:
    """The torch head of seg_heads.HEADS' `head` ("linear", "conv", "transformer", "shared_qk")."""
    if head == "linear":
        return TorchConvHead(in_features, num_classes, kernel_size=1)
    if head == "conv":
        return TorchConvHead(in_features, num_classes, kernel_size=3)
    if head in ("transformer", "shared_qk"):
        return TorchTransformerHead(
            in_features, num_classes, num_heads=num_heads, shared_qk=head == "shared_qk"
        )
    raise ValueError(f"unknown head {head!r}; use linear, conv, transformer or shared_qk")


class TorchFrozenBackboneSegmenter(nn.Module):
    """HF `ViTModel` (`backbone`, the DINO ViT) -> head (`head`) -> bilinear upsampling.

    Arguments are FrozenBackboneSegmenter's; its `backbone` sub-config (DinoViT's arguments)
    becomes a ViTConfig of `hidden_size`, `depth` layers, `num_heads`, MLP
    `hidden_size * mlp_ratio`, `patch_size`, `pretrain_image_size` (the position grid) and
    `layer_norm_eps`, no pooler, no dropout.
    With "backbone" in `frozen` the backbone's parameters have requires_grad False, it stays in
    eval mode under `.train()`, and it runs under no_grad (the Flax model's stop_gradient:
    nothing of it is kept for a backward pass). Position embeddings are resized bicubically
    for other grids (`interpolate_pos_encoding`), as DinoViT does. The patch tokens after the
    final LayerNorm (CLS dropped) form the [B, D, H/p, W/p] map the head reads; its logits are
    resized to [B, C, H, W] with `align_corners=False`, which equals `jax.image.resize`'s
    bilinear for upsampling.
    """

    def __init__(
        self,
        num_classes: int,
        head: str = "linear",
        head_num_heads: int = 6,
        backbone: Mapping[str, Any] = FrozenDict(),
        frozen: tuple[str, ...] = ("backbone",),
        in_channels: int = 3,
    ):
        super().__init__()
        from transformers import ViTConfig, ViTModel

        vit = {**_DINO_VIT_DEFAULTS, **backbone}
        hidden_size, patch_size = vit["hidden_size"], vit["patch_size"]
        pretrain_image_size = vit["pretrain_image_size"]
        frozen_backbone = "backbone" in frozen
        # DinoViT's optional conv stem runs before the ViT, whose patches are then smaller.
        stem, channels, reduced = [], in_channels, patch_size
        for width in vit["stem_widths"]:
            reduced //= 2
            for j in range(vit["stem_depth"]):
                stem.append(
                    TorchStemConv(channels, width, 2 if j == 0 else 1, vit["layer_norm_eps"])
                )
                channels = width
        config = ViTConfig(
            hidden_size=hidden_size,
            num_hidden_layers=vit["depth"],
            num_attention_heads=vit["num_heads"],
            intermediate_size=round(hidden_size * vit["mlp_ratio"]),
            hidden_act="gelu",
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            layer_norm_eps=vit["layer_norm_eps"],
            image_size=pretrain_image_size * reduced // patch_size,
            patch_size=reduced,
            num_channels=channels,
            qkv_bias=vit["qkv_bias"],
        )
        self.patch_size = patch_size
        self.pretrain_image_size = pretrain_image_size
        self.frozen_backbone = frozen_backbone
        self.stem = nn.Sequential(*stem)  # empty: DINO's layout
        self.backbone = ViTModel(config, add_pooling_layer=False)
        self.head = build_head(head, hidden_size, num_classes, head_num_heads)
        if frozen_backbone:
            for part in (self.stem, self.backbone):
                part.requires_grad_(False)
                part.eval()

    def train(self, mode: bool = True) -> TorchFrozenBackboneSegmenter:
        super().train(mode)
        if self.frozen_backbone:
            self.stem.eval()
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, height, width = images.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a multiple of patch_size={p}")
        native = (height, width) == (self.pretrain_image_size,) * 2
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_backbone):
            tokens = self.backbone(
                pixel_values=self.stem(images), interpolate_pos_encoding=not native
            ).last_hidden_state
        features = tokens[:, 1:].transpose(1, 2).reshape(b, -1, height // p, width // p)
        logits = self.head(features)
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
