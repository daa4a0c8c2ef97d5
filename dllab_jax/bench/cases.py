"""The benchmark suites: which models, at which sizes, fed how.

A case is a config of this project (file + presets + overrides), so the JAX side times
exactly the train step `main.py` runs. A faithful preset whose data set may be absent gets the
`synthetic` source with the same image shape and classes (dllab_jax/data/sources/synthetic.py): the
step is the same, only the pixels are random. The PyTorch side builds the reference of the
same model with the same constructor arguments (dllab_jax/bench/torch_models/).

Suites:
  offline   the offline defaults at their own batch and size, on their real (procedural)
            data: the CPU table of the README, plus the input-pipeline ratio.
  faithful  the handout's models at the handout's batch and input size (GPU-sized); the
            models with speed goals first, so a time budget (--budget-s) cuts the others.
  quick     tiny versions of a few cases: the suite's smoke test (seconds on a CPU).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from dllab_jax import config_utils


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the table.

    Attributes:
      name: the row's label.
      config: a config spec, 'configs/<file>.py[:presets]'.
      batch_size: the global batch of the timed step.
      synthetic: if set, `config.data` becomes the `synthetic` source with these keys
        (image_size, num_classes, labels); the data's mean/std are kept.
      overrides: dotted config keys to set after loading ('model.features': 256).
      pipeline: also time steps fed by the config's real input pipeline.
      kind: 'train' (the config's train step), 'two_tower_forward' (the BLIP towers'
        inference at `TWO_TOWER_SIZES[model_size]`) or 'caption_decode' (greedy captions at
        `CAPTIONER_SIZES[model_size]`); see dllab_jax/bench/inference.py.
      model_size, text_len: the model size and text (or caption) length of those.
    """

    name: str
    config: str
    batch_size: int
    synthetic: dict[str, Any] | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    pipeline: bool = False
    kind: str = "train"
    model_size: str = ""
    text_len: int = 35

    def make_config(self, dtype: str = "float32") -> ml_collections.ConfigDict:
        config = config_utils.load_config(self.config)
        config.unlock()
        config.batch_size = config.eval_batch_size = self.batch_size
        if self.synthetic is not None:
            kept = {k: config.data[k] for k in ("mean", "std") if k in config.data}
            synthetic = dict(name="synthetic", **kept, **self.synthetic)
            config.data = ml_collections.ConfigDict(synthetic)
            if "augment" in config:
                config.augment = ml_collections.ConfigDict()  # none: the batch is the input
        for key, value in self.overrides.items():
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                node = node[part]
            node[leaf] = value
        config.model.dtype = dtype
        config.lock()
        return config


CIFAR = dict(image_size=32, num_classes=10, labels="class")
CARLA = dict(image_size=(320, 416), num_classes=13, labels="dense")
PETS = dict(image_size=64, num_classes=3, labels="dense")
VOC_CROP = dict(image_size=256, num_classes=21, labels="dense")

# The shapes of the data sets a faithful preset reads from disk; the image size a config sets
# wins (a resize is part of those sources).
STAND_INS = {
    "cifar10": CIFAR,
    "carla": CARLA,
    "oxford_iiit_pet": PETS,
    "cityscapes": dict(image_size=64, num_classes=19, labels="dense"),
    "voc_segmentation": VOC_CROP,  # the train crop; examples are padded to 512 on disk
}


def synthetic_stand_in(data_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict | None:
    """`synthetic` data of the shape of `data_config`'s data set, or None if not known."""
    shape = STAND_INS.get(data_config.name)
    if shape is None:
        return None
    stand_in = dict(shape, name="synthetic", stands_in_for=data_config.name)
    if "image_size" in data_config and data_config.name != "voc_segmentation":
        stand_in["image_size"] = data_config.image_size
    stand_in.update({k: data_config[k] for k in ("mean", "std") if k in data_config})
    return ml_collections.ConfigDict(stand_in)


SUITES: dict[str, tuple[Case, ...]] = {
    "offline": (
        Case("CNN 16/32/64", "configs/classification.py", 128, pipeline=True),
        Case("ResNet-18 (ImageNet stem)", "configs/classification.py:resnet18", 128),
        Case("UvA ViT", "configs/classification.py:vit", 128),
        Case("U-Net 16/32/64", "configs/segmentation.py", 32, pipeline=True),
        Case("SegFormer-b0", "configs/segformer.py", 16, pipeline=True),
        Case("ContextUnet 32", "configs/diffusion.py", 64, pipeline=True),
    ),
    "faithful": (
        Case("ResNet-18 ImageNet stem", "configs/classification.py:resnet18", 128, CIFAR),
        Case("ResNet-18 CIFAR stem", "configs/classification.py:resnet18,cifar_stem", 128, CIFAR),
        Case("UvA ViT", "configs/classification.py:vit", 128, CIFAR),
        Case("U-Net (CARLA)", "configs/segmentation.py:carla", 4, CARLA),
        Case("ContextUnet 256", "configs/diffusion.py:faithful", 64),
        Case("SegFormer-b0", "configs/segformer.py:handout_stem", 64, PETS),
        Case("FCN-32 (CARLA)", "configs/segmentation.py:carla,fcn32", 4, CARLA),
        *(
            Case(
                f"DINO ViT-S/16 + {head}",
                f"configs/seg_heads.py:voc,{head}",
                8,
                VOC_CROP,
            )
            for head in ("linear", "conv", "transformer", "shared_qk")
        ),
        # Retrieval's evaluation: images and captions through both towers (no training).
        Case(
            "BLIP two towers, forward (384 px)",
            "configs/retrieval.py:voc_blip",
            32,
            kind="two_tower_forward",
            model_size="blip_base",
        ),
        # Captioning's evaluation: greedy captions of 30 tokens (tokens/s), against
        # transformers' `generate`. text_len is the caption length here.
        Case(
            "BLIP captioning, greedy decode (384 px)",
            "configs/captioning.py:voc_blip",
            16,
            kind="caption_decode",
            model_size="blip_base",
            text_len=30,
        ),
    ),
    "quick": (
        Case(
            "CNN 4/8 (quick)",
            "configs/classification.py:smoke",
            8,
            dict(image_size=16, num_classes=10, labels="class"),
            overrides={"model.widths": (4, 8)},
        ),
        Case(
            "U-Net 4/8 (quick)",
            "configs/segmentation.py:smoke",
            4,
            dict(image_size=16, num_classes=5, labels="dense"),
            overrides={"model.features": (4, 8), "model.bottleneck": 16},
        ),
        Case(
            "Two towers tiny, forward (quick)",
            "configs/retrieval.py:smoke",
            4,
            kind="two_tower_forward",
            model_size="tiny",
        ),
        Case(
            "Captioner tiny, greedy decode (quick)",
            "configs/captioning.py:smoke",
            4,
            kind="caption_decode",
            model_size="tiny",
            text_len=12,
        ),
        Case(
            "ContextUnet 8 (quick)",
            "configs/diffusion.py:smoke",
            8,
            pipeline=True,
        ),
    ),
}
