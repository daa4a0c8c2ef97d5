"""E2 semantic segmentation with FCN-32 and U-Net (Ljubljana HW2 task 2).

Offline default (procedural `scenes`, the many-class label set: background + 10 shape
classes, 255 on a one-pixel band at class boundaries; 64x64; a U-Net 16/32/64 with skips):
    python main.py --config=configs/segmentation.py
    -> checkpoints/segmentation/summary.json (`val/miou`, `val/iou/<class>`), iou_*.png,
    predictions_val.png, curves.png. Adam lr 4e-3, 100 warm-up steps, cosine to 0, 10 epochs.
    Measured 2026-12-02 on 2 CPU cores over 3 seeds (`--mode=sweep --sweep.seeds=3`,
    reports/E2/segmentation): val mIoU 0.684 +- 0.034 (0.681 / 0.719 / 0.652), 8 min 51 s of
    training a run; FCN-32 (`fcn32`, the same 10 epochs) 0.242 +- 0.006 (2 seeds). At peak
    lr 2e-3 gave the U-Net 0.602 (seed 0), and FCN-32 for 3 epochs 0.132 (3 seeds). The
    handout's constant lr 1e-3 for 7 epochs gave 0.349 (`no_skips` 0.340; 2026-11-23).

Presets (combine with commas):
    unet       the U-Net with skips (default); `no_skips` removes them
    fcn32      FCN-32 on a ResNet-18 trunk (1x1 convs + one bilinear-initialised x32
               transposed conv)
    carla      the faithful recipe: the CARLA folders at config.data.root
               (data*/CameraRGB, data*/CameraSeg; 13 classes; 320x416), Adam 1e-4, batch 4
    imagenet_backbone   FCN-32's trunk from a local torchvision ResNet-18 file
               (resnet18-f37072fd.pth, ImageNet) at config.init_from.workdir, as the handout
    smoke      tiny splits and a few steps (tests)
A classification run's ResNet-18 trunk initialises FCN-32 by name, e.g.
    python main.py --config=configs/classification.py:resnet18 \
        --config.model.width=64 --config.model.stem=imagenet  # offline it is narrow
    python main.py --config=configs/segmentation.py:fcn32 \
        --config.init_from.workdir=checkpoints/classification-resnet18 \
        --config.init_from.target_prefix=backbone/ --config.init_from.source_prefix=backbone/
Handout reference (CARLA val mIoU over 13 classes): FCN-32 0.415-0.457, U-Net 0.512-0.513.
"""

import ml_collections

from dllab_jax.config_utils import (
    base_config,
    carla_folders,
    carla_recipe,
    parse_preset,
    shrink_for_smoke,
    unet_recipe,
)
from dllab_jax.lab.spec import Finding, Row, Sweep

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS = {
    "unet": "U-Net with skip connections (default)",
    "no_skips": "U-Net without skip connections",
    "fcn32": "FCN-32 on a ResNet-18 trunk",
    "carla": "CARLA folders at config.data.root, the handout's recipe",
    "imagenet_backbone": "FCN-32 trunk from a local torchvision ResNet-18 file",
    "smoke": "tiny splits and a few steps (tests)",
}
MODEL_PRESETS = ("unet", "no_skips", "fcn32")


def _model(name: str, offline: bool) -> ml_collections.ConfigDict:
    """Constructor arguments of each model (dllab_jax/models/{unet,fcn}.py)."""
    if name in ("unet", "no_skips"):
        # Encoder widths per level (finest first) and the bottleneck width. The handout's
        # classic U-Net is 64/128/256/512 + 1024; the offline default is 4x narrower and one
        # level shallower so it trains on 2 CPU cores in minutes.
        features, bottleneck = ((16, 32, 64), 128) if offline else ((64, 128, 256, 512), 1024)
        return ml_collections.ConfigDict(
            dict(
                name="unet",
                features=features,
                bottleneck=bottleneck,
                skip_connections=name == "unet",
                dtype="float32",
            )
        )
    if name == "fcn32":
        return ml_collections.ConfigDict(dict(name="fcn32", dtype="float32"))
    raise ValueError(name)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    presets = parse_preset(arg, PRESETS)
    config = base_config()  # the loop's keys, documented in dllab_jax/config_utils.py
    config.task = "segmentation"
    offline = "carla" not in presets

    # Data: procedural scenes with per-pixel class labels (dllab_jax/data/sources/scenes.py).
    config.data = ml_collections.ConfigDict(
        dict(
            name="scenes",
            seed=0,  # generator seed
            labels="classes",  # 'classes' (11 classes) or 'trimap' (3)
            image_size=64,
            num_train=4000,
            num_val=500,
            num_test=500,
            max_objects=4,  # shapes per scene, 1..max_objects
            ignore_band=1,  # pixels this close to a class boundary are 255 (ignored)
            mean=IMAGENET_MEAN,  # per-channel normalisation applied on device
            std=IMAGENET_STD,
        )
    )
    # Training-time augmentation (dllab_jax/data/augment.py): labels move with the image,
    # padding is labelled 255.
    config.augment = ml_collections.ConfigDict(
        dict(random_crop_padding=0, random_resized_crop=False, hflip=True)
    )
    config.model = _model("unet", offline)

    unet_recipe(config, num_epochs=10.0)  # Adam, batch 32, validated every epoch
    # Offline: four times the handout's Adam 1e-3, warmed up over 100 steps and decayed to 0
    # by a cosine. At a constant 1e-3 the U-Net reached val mIoU 0.349 in 7 epochs; in 10
    # epochs of this schedule, 0.602 at peak lr 2e-3 and 0.681 at 4e-3 (2026-12-02, 2 CPU
    # cores, seed 0).
    config.optimizer.learning_rate = 4e-3
    config.optimizer.warmup_steps = 100
    config.optimizer.schedule = "cosine"
    config.checkpoint.best_metric = "val/miou"
    # IoU of a class absent from both labels and predictions: 'zero' (the TU Wien handout;
    # the mean is over all classes) or 'skip' (left out of the mean, as mmsegmentation).
    config.empty_class_iou = "zero"

    for name in presets:
        if name in MODEL_PRESETS:
            config.model = _model(name, offline)
    # FCN-32 trains as many epochs as the U-Net: its ResNet-18 step at 64x64 now takes about
    # the small U-Net's time on 2 CPU cores (0.43 s against 0.42-0.44 s at batch 32,
    # 2026-12-02; it was 1.48 s before the CPU work of the benchmark issue, when it got 3).
    for name in presets:
        if name == "carla":
            config.data = carla_folders(mean=IMAGENET_MEAN, std=IMAGENET_STD)
            carla_recipe(config)  # the handout: Adam 1e-4 (constant), batch 4, 10 epochs
        elif name == "imagenet_backbone":
            if config.model.name != "fcn32":
                config.model = _model("fcn32", offline)
            config.init_from.workdir = "checkpoints/resnet18-f37072fd.pth"
            config.init_from.format = "torchvision_resnet18"
            config.init_from.target_prefix = "backbone/"
            config.init_from.source_prefix = "backbone/"
        elif name == "smoke":
            shrink_for_smoke(config, {"scenes": (32, 12, 12)}, batch=8, steps=4, eval_every=2)
    return config


def get_sweep() -> Sweep:
    """E2's segmentation comparison: U-Net with and without skips, FCN-32 (`--mode=sweep`)."""
    return Sweep(
        experiment="E2",
        title="Segmentation: U-Net against FCN-32",
        rows=(
            Row("unet", "unet", label="U-Net with skips", reference={"val/miou": 0.512}),
            Row("no_skips", "no_skips", label="U-Net without skips"),
            # FCN-32's reference is the middle of the seeds' 0.415-0.457.
            Row("fcn32", "fcn32", label="FCN-32 (ResNet-18)", reference={"val/miou": 0.436}),
        ),
        metrics=("val/miou", "test/miou", "val/pixel_accuracy"),
        findings=(
            Finding(
                "U-Net segments better than FCN-32 (mIoU 0.51 against 0.42-0.46).",
                "val/miou",
                order=("unet", "fcn32"),
            ),
            Finding(
                "The U-Net segments most of each class (0.51 mIoU on CARLA); offline, the "
                "default must reach 0.6.",
                "val/miou",
                at_least=0.6,
                rows=("unet",),
            ),
        ),
        curve="val/miou",
        bars=("val/iou/",),
        figures=("predictions_val.png",),
        source="shared/SPEC.md E2 (CARLA, 13 classes)",
    )
