"""E4 segmentation heads on a frozen pretrained ViT (Freiburg DL Lab 2023, exercise 2).

The handout trains four heads on the frozen DINO ViT-S/16 on PASCAL VOC 2012. Offline, the
backbone is a small DINO-layout ViT (width 96, 4 blocks, 3 heads, 16x16 tokens of a 64x64
image) behind a convolutional stem (widths 32 and 64, two 3x3 convs each, LayerNorm + GELU),
545,579 parameters with the pre-training's linear head. It ships pre-trained with the
package (`dllab_jax/standins/seg_heads_backbone/`, its RECORD.md beside it): `:pretrain`
trained it end to end with a linear head on the procedural `scenes` of seed 1 (12,000 images,
4,000 steps, 44 min 50 s on 2 cores, val mIoU 0.794 on background + 10 shape kinds), and the
heads learn the same classes on the scenes of seed 0 (other images) from its frozen features:
    python main.py --config=configs/seg_heads.py              # = :linear
    python main.py --config=configs/seg_heads.py:conv
    python main.py --config=configs/seg_heads.py:transformer
    python main.py --config=configs/seg_heads.py:shared_qk
    python main.py --config=configs/seg_heads.py:pretrain     # remake the stand-in, then
    python -m dllab_jax.standins export --workdir=checkpoints/seg_heads-pretrain \
        --name=seg_heads_backbone --command="python main.py --config=configs/seg_heads.py:pretrain"
The pretext is supervised where DINO's is self-supervised. Why the stem: with DINO's plain
4x4 patch projection the ViT found the objects but not their kinds in every CPU budget tried
(2026-11-24 .. 12-08, pre-training val mIoU): 6 epochs 0.122; a one-conv stem (48, 96) 0.126;
sincos2d positions 0.121; lr 4e-3 + warm-up + clipping 0.151 after 6 epochs, 0.119 after 750
steps of a 30-epoch schedule (stopped). With the two-conv stem (each token sees 19 pixels, so
the shapes' corners) the same recipe went 0.216 / 0.402 / 0.576 / 0.679 / 0.794 at steps
500 / 1000 / 1500 / 2000 / 4000 (a 500-step cosine run: 0.172).
The heads over 3 seeds: reports/E4/REPORT.md (`--mode=sweep --sweep.seeds=3`).

Presets (combine with commas):
    linear, conv, transformer, shared_qk   the head (default linear)
    pretrain   the backbone's offline pre-training: the same model with a linear head,
               trained end to end (optimizer.trainable '.*') on the scenes of seed 1
    voc        the handout: VOC 2012 at config.data.root (VOCdevkit/VOC2012), 21 classes,
               DINO ViT-S/16 from a local DINO .pth or Hugging Face folder at
               config.init_from.workdir, train crops 256 (shorter side 256-300, flip),
               full-resolution validation (padded to 512, padding ignored), AdamW 1e-3,
               wd 1e-3, linear decay per epoch, batch 8, 15 epochs
    smoke      tiny splits and a few steps (tests)
Handout reference (VOC val mIoU): linear 0.42, conv 0.48, transformer 0.62, shared QK 0.59-0.60.
"""

import ml_collections

from dllab_jax import standins
from dllab_jax.config_utils import (
    base_config,
    parse_preset,
    shrink_for_smoke,
    use_smoke_pretraining,
)
from dllab_jax.lab.spec import Finding, Row, Sweep

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("linear", "conv", "transformer", "shared_qk")
PRESETS = {
    "linear": "1x1 conv head (default)",
    "conv": "3x3 conv head",
    "transformer": "one-block mask transformer head",
    "shared_qk": "the transformer head with shared queries and keys",
    "pretrain": "pre-train the offline backbone end to end on the scenes of another seed",
    "voc": "PASCAL VOC 2012 + DINO ViT-S/16 weights, the handout's recipe",
    "smoke": "tiny splits and a few steps (tests)",
}
PRETRAIN_SPEC = "configs/seg_heads.py:pretrain"
# The offline default's backbone: the shipped stand-in (dllab_jax/standins/), made by
# `python main.py --config=configs/seg_heads.py:pretrain` and
# `python -m dllab_jax.standins export --workdir=checkpoints/seg_heads-pretrain
#  --name=seg_heads_backbone --command=...` (its RECORD.md says the exact run).
STANDIN = "seg_heads_backbone"
PRETRAIN_STEPS = 4000

# DINO's ViT layout (dllab_jax/models/dino_vit.py's arguments): MLP ratio 4, q/k/v biases,
# LayerNorm epsilon 1e-6.
_DINO = dict(mlp_ratio=4.0, qkv_bias=True, layer_norm_eps=1e-6)
# The offline backbone at a CPU-sized width; pretrain_image_size is the scenes' (16x16 tokens).
# A convolutional stem (two widths, two 3x3 convs each: a 19-pixel view per token) before DINO's
# blocks: with a plain 4x4 patch projection the ViT found the objects but not their kinds in
# any CPU budget tried (see the module docstring).
OFFLINE_BACKBONE = dict(
    patch_size=4,
    hidden_size=96,
    depth=4,
    num_heads=3,
    pretrain_image_size=64,
    stem_widths=(32, 64),
    stem_depth=2,
    pos_embed_init="truncated_normal",
)
OFFLINE_BACKBONE.update(_DINO)
# DINO ViT-S/16 (dino_deitsmall16_pretrain.pth, facebook/dino-vits16).
VIT_S16 = dict(patch_size=16, hidden_size=384, depth=12, num_heads=6, pretrain_image_size=224)
VIT_S16.update(_DINO)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    presets = parse_preset(arg, PRESETS)
    config = base_config()  # the loop's keys, documented in dllab_jax/config_utils.py
    head = next((p for p in presets if p in HEADS), "linear")
    voc = "voc" in presets

    config.task = "segmentation"
    config.data = ml_collections.ConfigDict(
        dict(
            name="scenes",
            seed=0,
            labels="classes",  # background + 10 shape kinds
            image_size=64,
            num_train=4000,
            num_val=500,
            num_test=500,
            max_objects=4,
            size_range=(0.1, 0.3),  # shapes' circumradius, fraction of the side
            ignore_band=1,  # 255 on a 1-pixel band where classes meet
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
    )
    # Training-time augmentation (dllab_jax/data/augment.py; `voc` uses the handout's).
    config.augment = ml_collections.ConfigDict(
        dict(random_crop_padding=0, random_resized_crop=False, hflip=True)
    )
    config.model = ml_collections.ConfigDict(
        dict(
            name="dino_segmenter",
            head=head,  # linear | conv | transformer | shared_qk
            head_num_heads=6,  # attention heads of the transformer heads
            backbone=OFFLINE_BACKBONE,  # DinoViT's arguments (dllab_jax/models/dino_vit.py)
            dtype="float32",
        )
    )
    # The backbone is frozen: only `head/...` is in the optimiser, and the backbone runs in
    # inference mode behind stop_gradient (".*" in :pretrain trains it end to end).
    config.optimizer.trainable = "head/.*"
    config.init_from.workdir = standins.path(STANDIN)
    config.init_from.target_prefix = "backbone/"
    config.init_from.source_prefix = "backbone/"
    # The handout: AdamW lr 1e-3, wd 1e-3, linear decay to 0 per epoch.
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 1e-3
    config.optimizer.schedule = "linear"
    config.batch_size = 32
    config.eval_batch_size = 100
    config.num_epochs = 5.0
    config.eval_every_epochs = 1.0
    config.log_every_steps = 50
    config.eval_splits = ("val", "test")
    config.checkpoint.best_metric = "val/miou"
    # The handout averages IoU over the classes that occur (nan-mean): 'skip'.
    config.empty_class_iou = "skip"

    if "pretrain" in presets:
        # The stand-in for DINO's pre-training: the same ViT trained end to end, with a
        # linear head that is then dropped, on other images (the scenes of seed 1) than the
        # heads see (seed 0). Supervised, where DINO is self-supervised: from scratch on
        # 2 CPU cores a ViT learns nothing useful otherwise (see the module docstring).
        config.data.seed = 1
        config.model.head = "linear"
        config.optimizer.trainable = ".*"
        config.init_from = base_config().init_from
        config.data.num_train = 12000
        config.optimizer.learning_rate = 2e-3
        config.optimizer.schedule = "cosine"
        config.optimizer.warmup_steps = 200
        config.optimizer.grad_clip_norm = 1.0
        config.num_train_steps = PRETRAIN_STEPS
        config.eval_every_steps = 500
        config.eval_splits = ("val",)

    if voc:
        config.data = ml_collections.ConfigDict(
            dict(
                name="voc_segmentation",
                root="data/VOCdevkit/VOC2012",  # JPEGImages, SegmentationClass, ImageSets
                pad_size=512,  # every example padded to 512x512 (image 0, label 255)
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
            )
        )
        # The handout's train augmentation (dllab_jax/data/voc_augment.py).
        config.augment = ml_collections.ConfigDict(
            dict(name="voc", crop_size=256, short_side_range=(256, 300), hflip=True)
        )
        config.model.backbone = VIT_S16
        config.init_from.workdir = "checkpoints/dino_deitsmall16_pretrain.pth"  # or a HF folder
        config.init_from.format = "dino_vit"
        config.init_from.make_with = ""
        config.batch_size = 8
        config.eval_batch_size = 8
        config.num_epochs = 15.0
        config.eval_every_epochs = 1.0
        config.eval_splits = ("val",)

    if "smoke" in presets:
        scenes = (32, 12, 12)
        shrink_for_smoke(
            config, {"scenes": scenes, "shapes": scenes}, batch=8, steps=4, eval_every=2
        )
        config.optimizer.warmup_steps = 0
        # Tests make and read a smoke pre-training, never the shipped stand-in.
        if config.init_from.workdir == standins.path(STANDIN):
            config.init_from.make_with = PRETRAIN_SPEC
        use_smoke_pretraining(config)
    return config


def get_sweep() -> Sweep:
    """E4's comparison: the four heads on the frozen backbone (`--mode=sweep`)."""
    reference = {"linear": 0.42, "conv": 0.48, "transformer": 0.62, "shared_qk": 0.595}
    return Sweep(
        experiment="E4",
        title="Segmentation heads on a frozen pretrained ViT",
        rows=tuple(
            Row(head, head, reference={"val/miou": reference[head]})
            for head in ("linear", "conv", "transformer", "shared_qk")
        ),
        metrics=("val/miou", "test/miou", "val/pixel_accuracy"),
        findings=(
            Finding(
                "The transformer head beats shared QK, which beats conv, which beats linear "
                "(0.62 / 0.59 / 0.48 / 0.42 mIoU).",
                "val/miou",
                order=("transformer", "shared_qk", "conv", "linear"),
            ),
        ),
        curve="val/miou",
        bars=("val/iou/",),
        figures=("predictions_val.png",),
        source="shared/SPEC.md E4 (PASCAL VOC 2012 val mIoU)",
    )
