"""Pure Flax (linen) models, one family per file, no training logic.

`build_model(model_config, num_classes)` is the one place a config becomes a module:
`model_config.name` picks the class from `MODELS` and every other key of `model_config` is
passed to it as a constructor argument (so an unknown key is an error, not ignored).
Every model is called as `model.apply(variables, images, train=bool)` with
`images: [B, H, W, C] float32` (already normalised) and returns what its task expects.
"""

from __future__ import annotations

import dataclasses
import importlib

import flax.linen as nn
import ml_collections

from dllab_jax.errors import UserError

# name -> "module:Class"; imported on use so one family's dependencies never slow another.
MODELS = {
    "linear": "dllab_jax.models.cnn:LinearClassifier",
    "cnn": "dllab_jax.models.cnn:CNN",
    "resnet18": "dllab_jax.models.resnet:ResNet18",
    "vit": "dllab_jax.models.vit:ViT",
    "two_tower": "dllab_jax.models.blip:TwoTower",
    "blip_captioner": "dllab_jax.models.captioner:BlipCaptioner",
    "fcn32": "dllab_jax.models.fcn:FCN32",
    "unet": "dllab_jax.models.unet:UNet",
    "segformer": "dllab_jax.models.segformer:SegFormer",
    "dino_segmenter": "dllab_jax.models.seg_heads:FrozenBackboneSegmenter",
    "context_unet": "dllab_jax.models.context_unet:ContextUnet",
}


def model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; set config.model.name to one of {sorted(MODELS)}")
    module_name, class_name = MODELS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_model(model_config: ml_collections.ConfigDict, **task_kwargs) -> nn.Module:
    """Returns the linen module named by `model_config.name`.

    Args:
      model_config: `name` plus the module's constructor arguments.
      **task_kwargs: arguments the task decides (e.g. `num_classes`), not the user.
    """
    cls = model_class(model_config.name)
    kwargs = {k: v for k, v in model_config.to_dict().items() if k != "name"}
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise UserError(
            f"config.model has keys {unknown} that model {model_config.name!r} does not take; "
            f"it takes {sorted(fields - set(task_kwargs))}"
        )
    return cls(**kwargs, **task_kwargs)
