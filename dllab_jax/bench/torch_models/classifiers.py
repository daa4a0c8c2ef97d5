"""PyTorch references of the classifiers: linear, CNN, ResNet-18 (and its trunk), the UvA ViT."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def image_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """An image size as (height, width): an int is a square."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


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
        height, width = image_hw(image_size)
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
    """torchvision's resnet18 up to `layer4` (no pooling, no fc): [B, C, H, W] -> [B, 8w, ...].

    stem "imagenet" is torchvision's 7x7/2 conv + 3x3/2 maxpool, "cifar" a 3x3/1 conv and no
    maxpool; `width` w is the first stage's channels (64 = torchvision). Attribute names are
    torchvision's, so its state dict loads as is.
    """

    def __init__(self, stem: str = "imagenet", in_channels: int = 3, width: int = 64):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown ResNet stem {stem!r}; use 'imagenet' or 'cifar'")
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        cin = width
        for i, multiple in enumerate((1, 2, 4, 8)):
            stride, cout = (1 if i == 0 else 2), multiple * width
            blocks = [TorchBasicBlock(cin, cout, stride), TorchBasicBlock(cout, cout, 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TorchResNet18(TorchResNet18Backbone):
    """torchvision.models.resnet18, with the CIFAR stem variant (3x3/1 conv, no maxpool).

    A subclass rather than a holder of the backbone, so the state dict keeps torchvision's flat
    names (`conv1.weight`, `layer1.0.bn1.weight`, `fc.weight`). `dropout` sits between the
    pooling and `fc` as in our ResNet18 (torchvision has none: 0.0).
    """

    def __init__(self, num_classes, stem="imagenet", dropout=0.0, in_channels=3, width=64):
        super().__init__(stem, in_channels, width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(8 * width, num_classes)

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
