"""`build_torch_model`: the PyTorch reference of a registry name, built from the Flax
model's constructor arguments; `TORCH_MODELS`, the builders by name.

Each builder takes the Flax model's constructor arguments under the Flax names, with the
Flax defaults (tests/bench/test_torch_models.py compares the defaults), plus `in_channels`
and, where the Flax model sizes a parameter from its first input, `image_size`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from dllab_jax.bench.torch_models.classifiers import (
    TorchCNN,
    TorchLinearClassifier,
    TorchResNet18,
    TorchVisionTransformer,
    image_hw,
)
from dllab_jax.bench.torch_models.context_unet import TorchContextUnet
from dllab_jax.bench.torch_models.dense import TorchFCN32, TorchSegFormer, TorchUNet
from dllab_jax.bench.torch_models.seg_heads import TorchFrozenBackboneSegmenter


def count_trainable(module: nn.Module) -> int:
    """Number of parameters with `requires_grad` (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _resnet18(num_classes, stem="imagenet", width=64, dropout=0.0, in_channels=3):
    return TorchResNet18(num_classes, stem, dropout, in_channels, width)


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
    height, width = image_hw(image_size)
    num_patches = (height // patch_size) * (width // patch_size)
    # TorchVisionTransformer keeps the tutorial's argument order (num_channels third).
    return TorchVisionTransformer(
        embed_dim,
        hidden_dim,
        in_channels,
        num_heads,
        num_layers,
        num_classes,
        patch_size,
        num_patches,
        dropout,
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
    """The PyTorch reference of the registered model `name` built with the same arguments.

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
