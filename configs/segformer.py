"""E3 SegFormer pre-training and fine-tuning (TU Wien DLVC 2024 A2).

The handout pre-trains SegFormer (MiT-b0) on Cityscapes, then fine-tunes it on Oxford-IIIT
Pet trimaps with four strategies. Offline, the procedural `scenes` stand in for both: the
many-class label set (background + 10 shape classes) for Cityscapes, the trimap label set
(object / background / border) of other scenes (generator seed 1) for the pets.

    python main.py --config=configs/segformer.py:pretrain           # checkpoints/segformer-pretrain
    python main.py --config=configs/segformer.py:scratch            # = the default
    python main.py --config=configs/segformer.py:finetune
    python main.py --config=configs/segformer.py:finetune_low_lr
    python main.py --config=configs/segformer.py:finetune_frozen
The fine-tuning presets load `encoder/...` from checkpoints/segformer-pretrain (best val mIoU)
and train the pre-training run first if it is missing. Measured 2026-11-23 on 2 CPU cores
(other jobs running), best val mIoU over object / background / border (500 scenes):
    pretrain 0.138 (11 classes; 7 min 15 s), scratch (the default) 0.494 (5 min 41 s),
    finetune 0.658 (4 min 49 s), finetune_low_lr 0.632 (5 min 54 s), finetune_frozen 0.627
    (7 min 19 s). The README's E3 section has the table. Pre-training stays far from its
    0.4 bar: 12 epochs at lr 2e-3 with a 200-step warm-up and a cosine decay reached 0.139
    by step 935 with AMSGrad and a best 0.178 without it (2026-12-02, other jobs running);
    the U-Net on the same classes reaches 0.68 (configs/segmentation.py). Both transformer
    encoders here (this one and configs/seg_heads.py's ViT) find the shapes (background IoU
    0.96) but barely tell the ten kinds apart through stride-4 tokens.

Presets (combine with commas):
    pretrain          the many-class scenes (or Cityscapes with `cityscapes`), 11 classes
    scratch           trimap scenes from a random initialisation (default)
    finetune          encoder initialised from the pre-training run, lr 1e-3
    finetune_low_lr   the same with lr 1e-4
    finetune_frozen   encoder initialised and frozen: only `decode_head/...` trains and the
                      optimiser keeps no state for the encoder
    pets              Oxford-IIIT Pet from tfds (trainval / test as val), 64x64 nearest,
                      the handout's recipe (30 epochs, batch 64)
    cityscapes        Cityscapes from tfds (manual download), 64x64, 19 classes; with
                      `pretrain` the handout's pre-training (40 epochs, batch 16)
    paper_stem        the paper's 7x7 stride-4 first patch embedding (the offline default's)
    handout_stem      the handout's 5x5 stride-2 first patch embedding (pets / cityscapes')
    smoke             tiny splits and a few steps (tests)
The faithful sequence is `pretrain,cityscapes`, then `pets,<strategy>` with
--config.init_from.make_with=configs/segformer.py:pretrain,cityscapes (or the pre-training
run's workdir in --config.init_from.workdir).
Handout reference (Pets val mIoU %): scratch 63.9, fine-tune 65.0, lower lr 62.4, frozen 55.2.
"""

import ml_collections

from dllab_jax.config_utils import base_config, parse_preset, shrink_for_smoke
from dllab_jax.errors import UserError
from dllab_jax.lab.spec import Finding, Row, Sweep

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS = {
    "pretrain": "pre-train on the many-class scenes (or Cityscapes)",
    "scratch": "fine-tuning data from a random initialisation (default)",
    "finetune": "encoder from the pre-training run, lr 1e-3",
    "finetune_low_lr": "encoder from the pre-training run, lr 1e-4",
    "finetune_frozen": "encoder from the pre-training run, frozen; only the decoder trains",
    "pets": "Oxford-IIIT Pet from tfds, the handout's recipe",
    "cityscapes": "Cityscapes from tfds (manual download)",
    "paper_stem": "7x7 stride-4 first patch embedding (the paper's; offline default)",
    "handout_stem": "5x5 stride-2 first patch embedding (the handout's; real data default)",
    "smoke": "tiny splits and a few steps (tests)",
}
STRATEGIES = ("scratch", "finetune", "finetune_low_lr", "finetune_frozen")
PRETRAIN_WORKDIR = "checkpoints/segformer-pretrain"
ENCODER = "encoder/"


def _scenes(labels: str, seed: int, num_train: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            name="scenes",
            seed=seed,  # generator seed: the fine-tuning scenes are not the pre-training ones
            labels=labels,  # 'classes' (11) or 'trimap' (3: object, background, border)
            image_size=64,
            num_train=num_train,
            num_val=500,
            num_test=500,
            max_objects=4,
            size_range=(0.1, 0.3),  # shapes' circumradius, fraction of the side
            ignore_band=1,  # classes only: 255 on a 1-pixel band at class boundaries
            trimap_border=1,  # trimap only: the border class is 2 pixels wide
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    presets = parse_preset(arg, PRESETS)
    strategies = [p for p in presets if p in STRATEGIES]
    if len(strategies) > 1 or (strategies and "pretrain" in presets):
        raise UserError(f"choose one of pretrain, {', '.join(STRATEGIES)}; got {presets}")
    pretrain = "pretrain" in presets
    strategy = strategies[0] if strategies else "scratch"
    config = base_config()  # the loop's keys, documented in dllab_jax/config_utils.py
    config.task = "segmentation"

    config.data = _scenes("classes", 0, 3000) if pretrain else _scenes("trimap", 1, 1000)
    # Training-time augmentation (dllab_jax/data/augment.py); the handout uses none.
    config.augment = ml_collections.ConfigDict(
        dict(random_crop_padding=0, random_resized_crop=False, hflip=False)
    )
    # MiT-b0 (dllab_jax/models/segformer.py). Offline the first patch embedding is the
    # paper's 7x7 stride 4: a quarter of the stage-1 tokens, 4.4x faster on 2 CPU cores
    # (1.36 s vs 6.0 s per step of 64) than the handout's 5x5 stride 2, which `pets` and
    # `cityscapes` use.
    config.model = ml_collections.ConfigDict(
        dict(
            name="segformer",
            hidden_sizes=(32, 64, 160, 256),
            depths=(2, 2, 2, 2),
            num_heads=(1, 2, 5, 8),
            sr_ratios=(8, 4, 2, 1),
            mlp_ratio=4,
            patch_sizes=(7, 3, 3, 3),
            strides=(4, 2, 2, 2),
            drop_path_rate=0.1,  # stochastic depth, linearly increasing over the blocks
            layer_norm_eps=1e-6,
            decoder_hidden_size=256,  # the all-MLP head's embedding
            decoder_dropout=0.1,
            dtype="float32",
        )
    )

    # The handout: AdamW lr 1e-3 with AMSGrad, decay 0.98 per epoch, batch 64, validate
    # every 2nd epoch, keep the best val mIoU. Offline: batch 16 (4x the updates for the
    # same compute; 264 ms per step on 2 CPU cores) and fewer epochs.
    config.optimizer.schedule = "exponential"
    config.optimizer.decay_rate = 0.98
    config.optimizer.amsgrad = True
    config.batch_size = 16
    config.eval_batch_size = 100
    config.num_epochs = 12.0
    config.eval_every_epochs = 2.0
    config.log_every_steps = 50
    config.eval_splits = ("val",)
    config.checkpoint.best_metric = "val/miou"
    # IoU of a class absent from both labels and predictions: 'zero' (the TU Wien handout;
    # the mean is over all classes) or 'skip' (left out of the mean, as mmsegmentation).
    config.empty_class_iou = "zero"

    if pretrain:
        config.num_epochs = 6.0
        config.eval_every_epochs = 1.0
    elif strategy != "scratch":
        # The encoder (patch embeddings, blocks, norms) comes from the pre-training run by
        # name; the head (other classes) starts fresh.
        config.init_from.workdir = PRETRAIN_WORKDIR
        config.init_from.target_prefix = ENCODER
        config.init_from.source_prefix = ENCODER
        config.init_from.make_with = "configs/segformer.py:pretrain"
        if strategy == "finetune_low_lr":
            config.optimizer.learning_rate = 1e-4
        elif strategy == "finetune_frozen":
            config.optimizer.trainable = "decode_head/.*"

    for name in presets:
        if name == "pets":
            config.data = ml_collections.ConfigDict(
                dict(
                    name="oxford_iiit_pet",
                    data_dir="",  # '' = tfds default (~/tensorflow_datasets)
                    download=False,  # True lets tfds download and prepare it
                    image_size=64,
                    image_resample="nearest",  # the handout resizes images with nearest too
                    mean=IMAGENET_MEAN,
                    std=IMAGENET_STD,
                )
            )
            config.num_epochs = 30.0
            config.eval_every_epochs = 2.0
            config.batch_size = 64
        elif name == "cityscapes":
            config.data = ml_collections.ConfigDict(
                dict(
                    name="cityscapes",
                    data_dir="",
                    manual_dir="",  # folder with the two Cityscapes zips (first run only)
                    image_size=64,
                    image_resample="nearest",
                    mean=IMAGENET_MEAN,
                    std=IMAGENET_STD,
                )
            )
            config.batch_size = 16 if pretrain else 64
            if pretrain:
                config.num_epochs = 40.0  # the handout's pre-training: 40 epochs, batch 16
                config.eval_every_epochs = 2.0
        elif name == "smoke":
            shrink_for_smoke(config, {"scenes": (32, 12, 12)}, batch=8, steps=4, eval_every=2)
            # One block per stage and a narrow head: a third of MiT-b0's compile time.
            config.model.depths = (1, 1, 1, 1)
            config.model.decoder_hidden_size = 64
    if "pets" in presets or "cityscapes" in presets:
        config.log_every_steps = 50
        config.model.patch_sizes, config.model.strides = (5, 3, 3, 3), (2, 2, 2, 2)
    if "paper_stem" in presets:
        config.model.patch_sizes, config.model.strides = (7, 3, 3, 3), (4, 2, 2, 2)
    if "handout_stem" in presets:
        config.model.patch_sizes, config.model.strides = (5, 3, 3, 3), (2, 2, 2, 2)
    if strategy != "scratch" and not pretrain and "pets" in presets:
        # The faithful fine-tuning reads the Cityscapes pre-training (default workdir of
        # `pretrain,cityscapes`), not the offline one.
        config.init_from.workdir = PRETRAIN_WORKDIR + "-cityscapes"
        config.init_from.make_with = "configs/segformer.py:pretrain,cityscapes"
    return config


def get_sweep() -> Sweep:
    """E3's comparison: the four fine-tuning strategies (`--mode=sweep`). The fine-tuning rows
    start from the pre-training run at PRETRAIN_WORKDIR (made first when missing). The
    handout keeps the best validation mIoU: `best/val/miou`."""
    reference = {"scratch": 0.639, "finetune": 0.650, "finetune_low_lr": 0.624}
    reference["finetune_frozen"] = 0.552
    labels = {
        "scratch": "from scratch",
        "finetune": "encoder pre-trained",
        "finetune_low_lr": "encoder pre-trained, lr 1e-4",
        "finetune_frozen": "encoder pre-trained and frozen",
    }
    return Sweep(
        experiment="E3",
        title="SegFormer: pre-training and four fine-tuning strategies",
        rows=tuple(
            Row(s, s, label=labels[s], reference={"best/val/miou": reference[s]})
            for s in STRATEGIES
        ),
        metrics=("best/val/miou", "val/miou", "best/val/pixel_accuracy"),
        findings=(
            Finding(
                "Fine-tuning the pre-trained encoder beats training from scratch, which beats "
                "the lower learning rate, and freezing the encoder is last (65.0 / 63.9 / 62.4 "
                "/ 55.2% mIoU).",
                "best/val/miou",
                order=("finetune", "scratch", "finetune_low_lr", "finetune_frozen"),
            ),
        ),
        curve="val/miou",
        bars=("val/iou/",),
        figures=("predictions_val.png",),
        source="shared/SPEC.md E3 (Oxford-IIIT Pet val mIoU)",
    )
