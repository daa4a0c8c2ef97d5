"""PyTorch references of the dense-prediction models: U-Net, FCN-32, SegFormer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dllab_jax.bench.torch_models.classifiers import TorchResNet18Backbone
from dllab_jax.models.fcn import (
    UPSAMPLE_KERNEL,
    UPSAMPLE_PADDING,
    UPSAMPLE_STRIDE,
    bilinear_kernel,
)


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
