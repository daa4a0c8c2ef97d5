"""E2 colourisation with a U-Net, with and without skip connections (Ljubljana HW2 task 3).

Offline default (the images of the procedural `scenes`, 64x64: coloured shapes on clutter
strokes and blobs; the grey luma in, RGB out; U-Net 16/32/64 with skips, L1 loss):
    python main.py --config=configs/colorization.py            # = :skips
    python main.py --config=configs/colorization.py:no_skips
    -> checkpoints/colorization[-no_skips]/summary.json (`val/psnr` in dB, `val/l1`, ...)
    and colorization_val.png (grey / prediction / target / the edges of both). Measured
    2026-12-02 on 2 CPU cores over 3 seeds (`--mode=sweep --sweep.seeds=3`,
    reports/E2/colorization; last evaluation): with skips val PSNR 14.00 +- 0.17 dB, gradient
    error 0.053 +- 0.005, 5 min 07 s; without 13.68 +- 0.18 dB, 0.065 +- 0.002, 4 min 15 s.
    The shapes' colours are random, so neither can guess
    them (both predict muted average colours) and PSNR moves little; the gradient error
    (`val/gradient_l1`, detail apart from colour) shows the gap, as the figure's edge columns
    do: with skips edges and thin strokes stay sharp, without them everything is blurred and
    checkered.

Presets (combine with commas):
    skips      U-Net with skip connections (default)
    no_skips   the same U-Net without them: fine detail (edges of the clutter, thin strokes)
               must pass through the 8x8 bottleneck and comes out blurred
    l2         L2 instead of L1 loss
    carla      the CARLA images at config.data.root (320x416), the classic 64-1024 U-Net,
               Adam 1e-4, batch 4 (the handout's segmentation recipe)
    smoke      tiny splits and a few steps (tests)
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

PRESETS = {
    "skips": "U-Net with skip connections (default)",
    "no_skips": "U-Net without skip connections",
    "l2": "L2 loss instead of L1",
    "carla": "CARLA images at config.data.root, the classic U-Net",
    "smoke": "tiny splits and a few steps (tests)",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    presets = parse_preset(arg, PRESETS)
    config = base_config()  # the loop's keys, documented in dllab_jax/config_utils.py
    config.task = "colorization"
    config.loss = "l1"  # 'l1' or 'l2' between predicted and true RGB in [0, 1]

    # Any image source works; only `image` is used (dllab_jax/data/sources/).
    config.data = ml_collections.ConfigDict(
        dict(name="scenes", seed=0, image_size=64, num_train=4000, num_val=500, num_test=500)
    )
    config.augment = ml_collections.ConfigDict(
        dict(random_crop_padding=0, random_resized_crop=False, hflip=True)
    )
    # dllab_jax/models/unet.py; the output is 3 channels (RGB), set by the task.
    config.model = ml_collections.ConfigDict(
        dict(
            name="unet",
            features=(16, 32, 64),  # encoder widths, finest level first
            bottleneck=128,
            skip_connections=True,
            dtype="float32",
        )
    )
    unet_recipe(config, num_epochs=6.0)  # Adam 1e-3, batch 32, validated every epoch
    config.checkpoint.best_metric = "val/psnr"

    for name in presets:
        if name == "no_skips":
            config.model.skip_connections = False
        elif name == "l2":
            config.loss = "l2"
        elif name == "carla":
            config.data = carla_folders()
            carla_recipe(config)  # the segmentation handout's: Adam 1e-4, batch 4, 10 epochs
            config.model.features = (64, 128, 256, 512)
            config.model.bottleneck = 1024
        elif name == "smoke":
            shrink_for_smoke(config, {"scenes": (32, 12, 12)}, batch=8, steps=4, eval_every=2)
    return config


def get_sweep() -> Sweep:
    """E2's colourisation comparison: U-Net with and without skips (`--mode=sweep`)."""
    return Sweep(
        experiment="E2",
        title="Colourisation: U-Net with and without skip connections",
        rows=(
            Row("skips", "skips", label="U-Net with skips"),
            Row("no_skips", "no_skips", label="U-Net without skips"),
        ),
        metrics=("val/psnr", "val/gradient_l1", "val/l1", "test/psnr", "test/gradient_l1"),
        findings=(
            Finding(
                "Without skip connections the colourisation loses fine detail.",
                "val/psnr",
                order=("skips", "no_skips"),
            ),
            # Detail apart from colour: the random hues are beyond both models, so PSNR moves
            # little; the error of the image gradients counts the lost edges alone.
            Finding(
                "Without skip connections the colourisation loses fine detail (edges).",
                "val/gradient_l1",
                order=("skips", "no_skips"),
                higher_is_better=False,
            ),
        ),
        curve="val/psnr",
        figures=("colorization_val.png",),
        source="shared/SPEC.md E2 (a figure, no number)",
    )
