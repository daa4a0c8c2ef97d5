"""Plain-PyTorch references of the Flax models, for timing the same network in both frameworks.

`build_torch_model(name, **kwargs)` takes a name of `dllab_jax.models.MODELS` and the Flax
model's constructor arguments (`config.model` without `name`, plus what the task adds, such
as `num_classes`) and returns the reference as a `torch.nn.Module`. Inputs are NCHW; outputs
are [B, num_classes] logits or NCHW maps at the input size. This is the only module of the
package that imports torch (the optional `convert` extra); `transformers` PyTorch models
serve where Hugging Face already has the network (the DINO ViT, SegFormer).

What each reference mirrors (the Flax module named in brackets):

  TorchLinearClassifier    one Linear on the flattened image [cnn.LinearClassifier]
  TorchCNN                 per width 2x (conv3x3 no bias, BN, ReLU), maxpool 2; GAP, dropout,
                           Linear [cnn.CNN]
  TorchResNet18            torchvision's resnet18 with our CIFAR stem option [resnet.ResNet18]
  TorchVisionTransformer   the UvA tutorial 11 ViT [vit.ViT]
  TorchUNet                DoubleConv encoder / 2x2 transposed-conv decoder [unet.UNet]
  TorchFCN32               TorchResNet18Backbone, 1x1 convs, x32 bilinear-initialised
                           transposed conv [fcn.FCN32]
  TorchContextUnet         the DeepLearning.AI / TeaPearce ContextUnet with one context MLP per
                           concept [context_unet.ContextUnet]
  TorchConvHead, TorchTransformerHead   the segmentation heads [seg_heads.ConvHead,
                           seg_heads.TransformerHead]
  TorchFrozenBackboneSegmenter   HF `ViTModel` (the DINO ViT) + a head + bilinear upsampling
                           [seg_heads.FrozenBackboneSegmenter]
  TorchSegFormer           HF `SegformerForSemanticSegmentation` + bilinear upsampling to the
                           input size [segformer.SegFormer]

Parameter counts are equal because every layer of the Flax model has its torch counterpart
with the same shapes: a conv without bias stays without bias, every BatchNorm / LayerNorm /
GroupNorm has its affine pair, transposed convs have the bias Flax gives them. BatchNorm
running statistics are buffers here and `batch_stats` there, so neither counts them. The
frozen DINO backbone is the one place where trainable and total differ: its parameters exist
(Flax's `params` holds them too) but have `requires_grad=False`, so `count_trainable` counts
the head only. tests/test_torch_references.py checks every count against `jax.eval_shape` of
the Flax model, at small sizes and at the configs' defaults.

Numerics follow the Flax models (which themselves follow PyTorch): same kernel sizes, strides,
paddings, norm epsilons, exact (erf) GELU, and bilinear resizes with half-pixel centres
(`align_corners=False`). Parameters are float32 in both; Flax's compute `dtype` has no
counterpart in a module, so it is accepted and ignored (`torch.autocast` is the equivalent,
the caller's choice). Initialisations are torch's defaults except where the Flax model fixes
values (FCN-32's bilinear upsampling kernel): they do not matter for timing.

New references name their submodules as the Flax modules name theirs, so a state-dict key is
the Flax parameter path with '.' for '/' (leaves renamed: kernel -> weight, scale -> weight,
mean / var -> running_mean / running_var). The older references (ResNet-18, ViT, ContextUnet)
keep the names of the PyTorch code they reproduce, which the Flax converters expect.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dllab_jax.models.fcn import (
    UPSAMPLE_KERNEL,
    UPSAMPLE_PADDING,
    UPSAMPLE_STRIDE,
    bilinear_kernel,
)


def count_trainable(module: nn.Module) -> int:
    """Number of parameters with `requires_grad` (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


# ---------------------------------------------------------------------------- classifiers


class TorchLinearClassifier(nn.Module):
    """Flatten the image, one Linear: [B, C, H, W] -> [B, num_classes].

    The Flax model sizes its Dense from the first input; here the image size is an argument.
    Flattening is in torch's (C, H, W) order, Flax's is (H, W, C): the same parameter count,
    but copied weights need their rows permuted.
    """

    def __init__(
        self, num_classes: int, image_size: int | Sequence[int] = 32, in_channels: int = 3
    ):
        super().__init__()
        height, width = _pair(image_size)
        self.head = nn.Linear(height * width * in_channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images.flatten(1))


class TorchCNN(nn.Module):
    """Per width [conv3x3 no bias -> BN -> ReLU] x 2 then 2x2 maxpool; GAP, dropout, Linear."""

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        dropout: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        self.widths = tuple(widths)
        cin = in_channels
        for i, width in enumerate(self.widths):
            for j in range(2):
                setattr(self, f"block{i}_conv{j}", nn.Conv2d(cin, width, 3, 1, 1, bias=False))
                setattr(self, f"block{i}_bn{j}", nn.BatchNorm2d(width))
                cin = width
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for i in range(len(self.widths)):
            for j in range(2):
                conv = getattr(self, f"block{i}_conv{j}")
                x = F.relu(getattr(self, f"block{i}_bn{j}")(conv(x)))
            x = F.max_pool2d(x, 2)
        return self.head(self.dropout(x.mean(dim=(2, 3))))


class TorchBasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock (same attribute names, so the same state dict)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TorchResNet18Backbone(nn.Module):
    """torchvision's resnet18 up to `layer4` (no pooling, no fc): [B, C, H, W] -> [B, 512, ...].

    stem "imagenet" is torchvision's 7x7/2 conv + 3x3/2 maxpool, "cifar" a 3x3/1 conv and no
    maxpool. Attribute names are torchvision's, so its state dict loads as is.
    """

    def __init__(self, stem: str = "imagenet", in_channels: int = 3):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown ResNet stem {stem!r}; use 'imagenet' or 'cifar'")
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        cin = 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            blocks = [TorchBasicBlock(cin, width, stride), TorchBasicBlock(width, width, 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TorchResNet18(TorchResNet18Backbone):
    """torchvision.models.resnet18, with the CIFAR stem variant (3x3/1 conv, no maxpool).

    A subclass rather than a holder of the backbone, so the state dict keeps torchvision's flat
    names (`conv1.weight`, `layer1.0.bn1.weight`, `fc.weight`). `dropout` sits between the
    pooling and `fc` as in our ResNet18 (torchvision has none: 0.0).
    """

    def __init__(self, num_classes, stem="imagenet", dropout=0.0, in_channels=3):
        super().__init__(stem, in_channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = super().forward(x)
        return self.fc(self.dropout(torch.flatten(x.mean(dim=(2, 3)), 1)))


class TorchAttentionBlock(nn.Module):
    """UvA tutorial 11 AttentionBlock (sequence-first nn.MultiheadAttention).

    With one addition: dropout on the attention branch before the residual sum, which our ViT
    (after the JAX tutorial 15) has and tutorial 11 lacks; eval outputs are unchanged.
    """

    def __init__(self, embed_dim, hidden_dim, num_heads, dropout=0.0):
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(embed_dim)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout)
        self.attn_dropout = nn.Dropout(dropout)
        self.layer_norm_2 = nn.LayerNorm(embed_dim)
        self.linear = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, embed_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        inp_x = self.layer_norm_1(x)
        x = x + self.attn_dropout(self.attn(inp_x, inp_x, inp_x, need_weights=False)[0])
        return x + self.linear(self.layer_norm_2(x))


class TorchVisionTransformer(nn.Module):
    """UvA tutorial 11 VisionTransformer (patches flattened in (C, ph, pw) order)."""

    def __init__(
        self,
        embed_dim,
        hidden_dim,
        num_channels,
        num_heads,
        num_layers,
        num_classes,
        patch_size,
        num_patches,
        dropout=0.0,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.input_layer = nn.Linear(num_channels * patch_size**2, embed_dim)
        self.transformer = nn.Sequential(
            *(
                TorchAttentionBlock(embed_dim, hidden_dim, num_heads, dropout)
                for _ in range(num_layers)
            )
        )
        self.mlp_head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
        self.dropout = nn.Dropout(dropout)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 1 + num_patches, embed_dim))

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        x = x.flatten(1, 2).flatten(2, 4)  # [B, N, C*p*p]
        x = self.input_layer(x)
        x = torch.cat([self.cls_token.repeat(b, 1, 1), x], dim=1)
        x = self.dropout(x + self.pos_embedding[:, : x.shape[1]])
        x = self.transformer(x.transpose(0, 1))
        return self.mlp_head(x[0])


# ---------------------------------------------------------------------- dense prediction


class TorchDoubleConv(nn.Module):
    """(3x3 conv, no bias -> BatchNorm -> ReLU) twice, as unet.DoubleConv."""

    def __init__(self, in_channels: int, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, features, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(features)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(features)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class TorchUNet(nn.Module):
    """U-Net with padded convs: `down{l}`, `bottleneck`, `up{l}_upsample` + `up{l}`, `head`.

    [B, C, H, W] -> [B, num_classes, H, W]; H and W multiples of 2 ** len(features). The skip
    is concatenated before the upsampled map, as in the Flax model.
    """

    def __init__(
        self,
        num_classes: int,
        features: Sequence[int] = (64, 128, 256, 512),
        bottleneck: int = 1024,
        skip_connections: bool = True,
        in_channels: int = 3,
    ):
        super().__init__()
        self.features = tuple(features)
        self.skip_connections = skip_connections
        cin = in_channels
        for level, width in enumerate(self.features):
            setattr(self, f"down{level}", TorchDoubleConv(cin, width))
            cin = width
        self.bottleneck = TorchDoubleConv(cin, bottleneck)
        cin = bottleneck
        for level in reversed(range(len(self.features))):
            width = self.features[level]
            setattr(self, f"up{level}_upsample", nn.ConvTranspose2d(cin, width, 2, 2))
            up_in = 2 * width if skip_connections else width
            setattr(self, f"up{level}", TorchDoubleConv(up_in, width))
            cin = width
        self.head = nn.Conv2d(self.features[0], num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, skips = images, []
        for level in range(len(self.features)):
            x = getattr(self, f"down{level}")(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for level in reversed(range(len(self.features))):
            x = getattr(self, f"up{level}_upsample")(x)
            if self.skip_connections:
                x = torch.cat([skips[level], x], dim=1)
            x = getattr(self, f"up{level}")(x)
        return self.head(x)


class TorchFCN32(nn.Module):
    """FCN-32: `backbone` (ResNet-18 trunk, imagenet stem) -> `conv6` 1x1 + ReLU -> `score` 1x1
    -> `upsample`, ConvTranspose2d(kernel 64, stride 32, padding 16, no bias) initialised to
    the bilinear kernel of fcn.py and trainable, as Flax's. [B, C, H, W] -> [B, classes, H, W]
    for H, W multiples of 32."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.backbone = TorchResNet18Backbone("imagenet", in_channels)
        self.conv6 = nn.Conv2d(512, 512, 1)
        self.score = nn.Conv2d(512, num_classes, 1)
        self.upsample = nn.ConvTranspose2d(
            num_classes,
            num_classes,
            UPSAMPLE_KERNEL,
            UPSAMPLE_STRIDE,
            UPSAMPLE_PADDING,
            bias=False,
        )
        # flax [k, k, in, out] -> torch [in, out, k, k]; the kernel is symmetric, so the
        # spatial flip between the two transposed-conv conventions does not matter.
        kernel = bilinear_kernel(UPSAMPLE_KERNEL, num_classes).transpose(2, 3, 0, 1)
        with torch.no_grad():
            self.upsample.weight.copy_(torch.from_numpy(kernel.copy()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv6(self.backbone(images)))
        return self.upsample(self.score(x))


class TorchSegFormer(nn.Module):
    """HF `SegformerForSemanticSegmentation` (as `model`) with logits upsampled to the input.

    HF returns logits at the first stage's resolution; the Flax SegFormer resizes them
    bilinearly (half-pixel centres) to the input size, so this does too. HF builds its
    LayerNorms with torch's default epsilon whatever its config says; they are set to
    `layer_norm_eps` here, as every LayerNorm of the Flax model uses it.
    """

    def __init__(
        self,
        num_classes: int,
        hidden_sizes: Sequence[int] = (32, 64, 160, 256),
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: int = 4,
        patch_sizes: Sequence[int] = (5, 3, 3, 3),
        strides: Sequence[int] = (2, 2, 2, 2),
        drop_path_rate: float = 0.1,
        layer_norm_eps: float = 1e-6,
        decoder_hidden_size: int = 256,
        decoder_dropout: float = 0.1,
        in_channels: int = 3,
    ):
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        stages = len(hidden_sizes)
        config = SegformerConfig(
            num_labels=num_classes,
            num_channels=in_channels,
            num_encoder_blocks=stages,
            hidden_sizes=list(hidden_sizes),
            depths=list(depths),
            num_attention_heads=list(num_heads),
            sr_ratios=list(sr_ratios),
            mlp_ratios=[mlp_ratio] * stages,
            patch_sizes=list(patch_sizes),
            strides=list(strides),
            drop_path_rate=drop_path_rate,
            layer_norm_eps=layer_norm_eps,
            decoder_hidden_size=decoder_hidden_size,
            classifier_dropout_prob=decoder_dropout,
            # The Flax model has no dropout inside the encoder.
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        self.model = SegformerForSemanticSegmentation(config)
        for module in self.model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = layer_norm_eps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=images).logits
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


# ------------------------------------------------------------------- segmentation heads


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

    Arguments are FrozenBackboneSegmenter's (the backbone's in DinoViT's terms): a ViTConfig
    of `hidden_size`, `depth` layers, `num_heads`, MLP `hidden_size * mlp_ratio`, `patch_size`,
    `pretrain_image_size` (the position grid) and `layer_norm_eps`, no pooler, no dropout.
    With `frozen_backbone` the backbone's parameters have requires_grad False, it stays in
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
        frozen_backbone: bool = True,
        patch_size: int = 16,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        pretrain_image_size: int = 224,
        in_channels: int = 3,
    ):
        super().__init__()
        from transformers import ViTConfig, ViTModel

        config = ViTConfig(
            hidden_size=hidden_size,
            num_hidden_layers=depth,
            num_attention_heads=num_heads,
            intermediate_size=round(hidden_size * mlp_ratio),
            hidden_act="gelu",
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            layer_norm_eps=layer_norm_eps,
            image_size=pretrain_image_size,
            patch_size=patch_size,
            num_channels=in_channels,
            qkv_bias=qkv_bias,
        )
        self.patch_size = patch_size
        self.pretrain_image_size = pretrain_image_size
        self.frozen_backbone = frozen_backbone
        self.backbone = ViTModel(config, add_pooling_layer=False)
        self.head = build_head(head, hidden_size, num_classes, head_num_heads)
        if frozen_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> TorchFrozenBackboneSegmenter:
        super().train(mode)
        if self.frozen_backbone:
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
                pixel_values=images, interpolate_pos_encoding=not native
            ).last_hidden_state
        features = tokens[:, 1:].transpose(1, 2).reshape(b, -1, height // p, width // p)
        logits = self.head(features)
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------- diffusion


class TorchResidualConvBlock(nn.Module):
    def __init__(self, in_channels, out_channels, is_res=False):
        super().__init__()
        self.same_channels = in_channels == out_channels
        self.is_res = is_res
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = self.conv2(x1)
        if not self.is_res:
            return x2
        return ((x + x2) if self.same_channels else (x1 + x2)) / 1.414


class TorchUnetDown(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.model = nn.Sequential(
            TorchResidualConvBlock(in_channels, out_channels),
            TorchResidualConvBlock(out_channels, out_channels),
            nn.MaxPool2d(2),
        )

    def forward(self, x):
        return self.model(x)


class TorchUnetUp(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.model = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 2, 2),
            TorchResidualConvBlock(out_channels, out_channels),
            TorchResidualConvBlock(out_channels, out_channels),
        )

    def forward(self, x, skip):
        return self.model(torch.cat((x, skip), 1))


class TorchEmbedFC(nn.Module):
    def __init__(self, input_dim, emb_dim):
        super().__init__()
        self.input_dim = input_dim
        self.model = nn.Sequential(
            nn.Linear(input_dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim)
        )

    def forward(self, x):
        return self.model(x.view(-1, self.input_dim))


class TorchContextUnet(nn.Module):
    """The course's ContextUnet with one context MLP per concept, embeddings summed.

    `forward(x, t, concepts, drop_mask=None)`:
      x: [B, in_channels, height, height] noisy images.
      t: [B] or [B, 1] timesteps divided by T.
      concepts: one [B, d_i] tensor per concept, d_i = concept_dims[i].
      drop_mask: [B, num_concepts] or [B] bool, True swaps that concept's embeddings for its
        learned nulls `null_embed1[i]` (2F) / `null_embed2[i]` (F); only with `null_concepts`
        (classifier-free guidance, as the Flax model's).
    Returns the [B, in_channels, height, height] eps prediction.
    """

    def __init__(
        self, in_channels=3, n_feat=256, concept_dims=(2, 3, 1), height=28, null_concepts=False
    ):
        super().__init__()
        self.n_feat = n_feat
        self.init_conv = TorchResidualConvBlock(in_channels, n_feat, is_res=True)
        self.down1 = TorchUnetDown(n_feat, n_feat)
        self.down2 = TorchUnetDown(n_feat, 2 * n_feat)
        self.to_vec = nn.Sequential(nn.AvgPool2d(height // 4), nn.GELU())
        self.timeembed1 = TorchEmbedFC(1, 2 * n_feat)
        self.timeembed2 = TorchEmbedFC(1, n_feat)
        self.contextembed1 = nn.ModuleList([TorchEmbedFC(d, 2 * n_feat) for d in concept_dims])
        self.contextembed2 = nn.ModuleList([TorchEmbedFC(d, n_feat) for d in concept_dims])
        self.null_concepts = null_concepts
        if null_concepts:
            # Zeros, as the Flax nulls start: a dropped concept initially adds nothing.
            self.null_embed1 = nn.ParameterList(
                [nn.Parameter(torch.zeros(2 * n_feat)) for _ in concept_dims]
            )
            self.null_embed2 = nn.ParameterList(
                [nn.Parameter(torch.zeros(n_feat)) for _ in concept_dims]
            )
        self.up0 = nn.Sequential(
            nn.ConvTranspose2d(2 * n_feat, 2 * n_feat, height // 4, height // 4),
            nn.GroupNorm(8, 2 * n_feat),
            nn.ReLU(),
        )
        self.up1 = TorchUnetUp(4 * n_feat, n_feat)
        self.up2 = TorchUnetUp(2 * n_feat, n_feat)
        self.out = nn.Sequential(
            nn.Conv2d(2 * n_feat, n_feat, 3, 1, 1),
            nn.GroupNorm(8, n_feat),
            nn.ReLU(),
            nn.Conv2d(n_feat, in_channels, 3, 1, 1),
        )

    def _concept_sum(self, embeds, nulls, concepts, drop_mask):
        total = 0
        for i, (embed, c) in enumerate(zip(embeds, concepts)):
            e = embed(c)
            if drop_mask is not None:
                e = torch.where(drop_mask[:, i : i + 1], nulls[i], e)
            total = total + e
        return total

    def forward(self, x, t, concepts, drop_mask=None):
        f = self.n_feat
        if drop_mask is not None:
            if not self.null_concepts:
                raise ValueError("drop_mask needs a model built with null_concepts=True")
            if drop_mask.ndim == 1:  # [B]: drop every concept of an example
                drop_mask = drop_mask[:, None].expand(-1, len(self.contextembed1))
        x = self.init_conv(x)
        down1 = self.down1(x)
        down2 = self.down2(down1)
        hiddenvec = self.to_vec(down2)
        nulls1 = self.null_embed1 if self.null_concepts else None
        nulls2 = self.null_embed2 if self.null_concepts else None
        cemb1 = self._concept_sum(self.contextembed1, nulls1, concepts, drop_mask)
        cemb2 = self._concept_sum(self.contextembed2, nulls2, concepts, drop_mask)
        cemb1, cemb2 = cemb1.view(-1, 2 * f, 1, 1), cemb2.view(-1, f, 1, 1)
        temb1 = self.timeembed1(t).view(-1, 2 * f, 1, 1)
        temb2 = self.timeembed2(t).view(-1, f, 1, 1)
        up1 = self.up0(hiddenvec)
        up2 = self.up1(cemb1 * up1 + temb1, down2)
        up3 = self.up2(cemb2 * up2 + temb2, down1)
        return self.out(torch.cat((up3, x), 1))


# ------------------------------------------------------------------------------ factory
#
# Each builder takes the Flax model's constructor arguments under the Flax names, with the
# Flax defaults (tests/test_torch_references.py compares the defaults), plus `in_channels`
# and, where the Flax model sizes a parameter from its first input, `image_size`.


def _resnet18(num_classes, stem="imagenet", dropout=0.0, in_channels=3):
    return TorchResNet18(num_classes, stem, dropout, in_channels)


def _vit(
    num_classes,
    patch_size=4,
    embed_dim=256,
    hidden_dim=512,
    num_heads=8,
    num_layers=6,
    dropout=0.2,
    image_size=32,
    in_channels=3,
):
    height, width = _pair(image_size)
    return TorchVisionTransformer(
        embed_dim=embed_dim,
        hidden_dim=hidden_dim,
        num_channels=in_channels,
        num_heads=num_heads,
        num_layers=num_layers,
        num_classes=num_classes,
        patch_size=patch_size,
        num_patches=(height // patch_size) * (width // patch_size),
        dropout=dropout,
    )


def _context_unet(
    in_channels=3, features=256, image_size=28, concept_dims=(2, 3, 1), null_concepts=False
):
    return TorchContextUnet(in_channels, features, tuple(concept_dims), image_size, null_concepts)


TORCH_MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": TorchLinearClassifier,
    "cnn": TorchCNN,
    "resnet18": _resnet18,
    "vit": _vit,
    "unet": TorchUNet,
    "fcn32": TorchFCN32,
    "segformer": TorchSegFormer,
    "dino_segmenter": TorchFrozenBackboneSegmenter,
    "context_unet": _context_unet,
}

# Constructor arguments that only select the Flax compute precision.
_FLAX_ONLY = ("dtype",)


def build_torch_model(name: str, **kwargs: Any) -> nn.Module:
    """The PyTorch reference of `dllab_jax.models.MODELS[name]` built with the same arguments.

    Args:
      name: a registry name ("cnn", "resnet18", "vit", "unet", "fcn32", "context_unet",
        "dino_segmenter", "segformer"; also "linear").
      **kwargs: the Flax model's constructor arguments (`config.model` keys without `name`,
        plus the task's, e.g. `num_classes`); `dtype` is ignored (see the module docstring).
        Also `in_channels` (default 3) and, for "vit" and "linear", `image_size` (default 32,
        an int or (H, W)), which the Flax models read from their first input.

    Returns:
      The module, in training mode, parameters float32 on the default device. Forward:
      images [B, C, H, W] -> logits [B, num_classes] (classifiers) or [B, num_classes, H, W]
      (dense models); "context_unet" is called as `model(x, t, concepts, drop_mask=None)`
      (`TorchContextUnet`).

    Raises:
      ValueError: no reference of that name, or an argument its constructor does not take.
    """
    if name not in TORCH_MODELS:
        raise ValueError(f"no PyTorch reference of model {name!r}; have {sorted(TORCH_MODELS)}")
    builder = TORCH_MODELS[name]
    kwargs = {k: v for k, v in kwargs.items() if k not in _FLAX_ONLY}
    accepted = set(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"the PyTorch reference of {name!r} takes no {unknown}; it takes {sorted(accepted)}"
        )
    return builder(**kwargs)
