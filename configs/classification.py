"""E1 image classification (TU Wien DLVC 2024 A1; Ljubljana HW2 task 1).

Offline default (procedural `shapes`: 20k/2k/2k, 10 classes, 32x32; CNN 16/32/64, 73k
parameters; 16 epochs of 156 steps with random crop (pad 4) and flip; the handout's AdamW
with AMSGrad, but lr 2e-3 with a 200-step warm-up and a cosine decay to 0):
    python main.py --config=configs/classification.py
    -> checkpoints/classification/summary.json. Measured 2026-12-02 on 2 CPU cores: 6 min
    54 s wall, test accuracy 0.923 (val 0.934, train 0.941). With the handout's schedule
    (lr 1e-3, x0.9 per epoch) the same model stopped at 0.749: it underfit (train 0.772).
    The linear baseline on the same pixels (`:linear`, 30 s) reaches 0.105 test accuracy
    (0.290 train): position, rotation, scale and clutter defeat a linear model.

Presets, combined with commas (`--config=configs/classification.py:cifar10,vit`):
    data:   cifar10 (tfds, the handout's 40k/10k/10k split), birds (an ImageFolder at
            --config.data.root), shapes (default)
    model:  cnn (default), resnet18, vit, linear (logistic regression on pixels). Offline,
            so that each run takes about the CNN's 7 minutes, ResNet-18 has the CIFAR stem at
            a quarter of the width (6 epochs) and the ViT is a small one (patch 8, width 128,
            no dropout; 8 epochs).
    switches: cifar_stem (ResNet-18 3x3 stem, no max-pool), dropout (0.5 before the head),
            wd (weight decay 0.1), aug (random crop pad 4 + flip), noaug (neither: the
            handout's unregularised start), rrc (RandomResizedCrop + flip), early_stop
            (patience 3 evaluations on val per-class accuracy), smoke (a few steps on tiny
            splits, for tests)
The faithful recipe (`cifar10`): batch 128, 30 epochs, AdamW lr 1e-3 amsgrad, exponential
decay 0.9 per epoch, validate every 5 epochs, keep the best val per-class accuracy.
Handout reference (test accuracy): ResNet-18 71.7, CNN 70.2, ViT 63.5; torchvision ResNet-18
from scratch 75.1.
"""

import ml_collections

from dllab_jax.config_utils import base_config, parse_preset, shrink_for_smoke
from dllab_jax.lab.spec import Finding, Row, Sweep

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS = {
    "shapes": "procedural shapes (the offline default)",
    "cifar10": "CIFAR-10 from tfds, handout split and recipe",
    "birds": "ImageFolder of bird species at config.data.root (224x224)",
    "cnn": "the small CNN",
    "resnet18": "torchvision ResNet-18",
    "vit": "the UvA tutorial ViT",
    "linear": "logistic regression on pixels (the linear baseline)",
    "cifar_stem": "ResNet-18 with a 3x3 stem and no max-pool",
    "dropout": "dropout 0.5 before the classifier",
    "wd": "weight decay 0.1",
    "aug": "random crop (padding 4) and horizontal flip",
    "noaug": "no augmentation (the offline default crops and flips)",
    "rrc": "RandomResizedCrop and horizontal flip",
    "early_stop": "stop after 3 evaluations without a better val per-class accuracy",
    "smoke": "tiny splits and a few steps (tests)",
}


def _model(name: str, offline: bool = False) -> ml_collections.ConfigDict:
    """Constructor arguments of each model family (see dllab_jax/models)."""
    if name == "cnn":
        # Conv widths of the three [conv-BN-ReLU x2, max-pool] blocks.
        return ml_collections.ConfigDict(
            dict(name="cnn", widths=(16, 32, 64), dropout=0.0, dtype="float32")
        )
    if name == "resnet18" and offline:
        # The imagenet stem leaves a 32x32 shape 8x8 pixels after two strides: its ResNet-18
        # trained to 0.44 train accuracy in 1000 steps where the CNN had 0.9. The CIFAR stem
        # keeps the resolution; at a quarter of the width (701k parameters) a step costs
        # 0.49 s at batch 128 on 2 CPU cores (full width: 30x the FLOPs).
        return ml_collections.ConfigDict(
            dict(name="resnet18", stem="cifar", width=16, dropout=0.0, dtype="float32")
        )
    if name == "resnet18":
        # stem: "imagenet" (7x7/2 + max-pool, as torchvision) or "cifar" (3x3/1, no pool).
        return ml_collections.ConfigDict(
            dict(name="resnet18", stem="imagenet", width=64, dropout=0.0, dtype="float32")
        )
    if name == "vit":
        # UvA tutorial 15 settings. Offline: 16 tokens of width 128 and no dropout, a 0.37 s
        # step at batch 128 on 2 CPU cores (the tutorial's 64 tokens of width 256 with dropout
        # take 3.3 s). Dropout costs more than attention here: each mask draws threefry bits.
        sizes = dict(patch_size=4, embed_dim=256, hidden_dim=512, num_heads=8, dropout=0.2)
        if offline:
            sizes = dict(patch_size=8, embed_dim=128, hidden_dim=256, num_heads=4, dropout=0.0)
        return ml_collections.ConfigDict(dict(name="vit", num_layers=6, dtype="float32", **sizes))
    if name == "linear":
        return ml_collections.ConfigDict(dict(name="linear", dtype="float32"))
    raise ValueError(name)


def _handout_schedule(config: ml_collections.ConfigDict) -> None:
    """The handout's AdamW schedule: lr 1e-3, no warm-up, x0.9 per epoch."""
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 0
    config.optimizer.schedule = "exponential"
    config.optimizer.decay_rate = 0.9


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    presets = parse_preset(arg, PRESETS)
    config = base_config()  # the loop's keys, documented in dllab_jax/config_utils.py
    config.task = "classification"

    # Data: the procedural offline default. Sizes are per split; examples are fixed by
    # (data.seed, split, index), so a larger split only adds examples.
    config.data = ml_collections.ConfigDict(
        dict(
            name="shapes",
            seed=0,  # generator seed
            num_train=20_000,
            num_val=2_000,
            num_test=2_000,
            image_size=32,
            mean=IMAGENET_MEAN,  # per-channel normalisation applied on device
            std=IMAGENET_STD,
        )
    )
    # Training-time augmentation (dllab_jax/data/augment.py). The offline default shifts and
    # mirrors (every shape class is mirror-symmetric as a class); the handout's presets start
    # with none, and `aug` / `rrc` are its regularisation experiments.
    config.augment = ml_collections.ConfigDict(
        dict(
            random_crop_padding=4,  # >0: pad by this many pixels, crop back (RandomCrop)
            random_resized_crop=False,  # torchvision RandomResizedCrop to the same size
            rrc_scale=(0.08, 1.0),
            rrc_ratio=(3 / 4, 4 / 3),
            hflip=True,  # random horizontal flip, p = 0.5
        )
    )
    config.model = _model("cnn")

    # The handout's optimiser is AdamW with AMSGrad at lr 1e-3, x0.9 per epoch (the `cifar10`
    # and `birds` presets). Offline, 16 epochs of it leave the CNN underfit (train accuracy
    # 0.77); twice the rate, warmed up over 200 steps and decayed to 0 by a cosine, reaches
    # train 0.94 / test 0.92 in the same steps.
    config.optimizer.amsgrad = True
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.schedule = "cosine"
    config.num_epochs = 16.0
    config.eval_every_epochs = 2.0
    config.eval_splits = ("train", "val", "test")
    config.checkpoint.best_metric = "val/per_class_accuracy"  # the handout keeps this best

    offline = not {"cifar10", "birds"} & set(presets)
    for name in presets:
        if name in ("cnn", "resnet18", "vit", "linear"):
            config.model = _model(name, offline)
            if offline and name in ("resnet18", "vit"):
                # About the CNN's 7 minutes on 2 CPU cores: 0.49 s and 0.37 s steps against
                # its 0.15 s.
                config.num_epochs = {"resnet18": 6.0, "vit": 8.0}[name]
    for name in presets:
        if name in ("cifar10", "birds"):
            _handout_schedule(config)
        if name == "cifar10":
            config.data = ml_collections.ConfigDict(
                dict(
                    name="cifar10",
                    data_dir="",  # '' = tfds default (~/tensorflow_datasets)
                    train_split="train[:40000]",  # data_batch_1..4
                    val_split="train[40000:]",  # data_batch_5
                    test_split="test",
                    download=False,  # True lets tfds download and prepare it
                    mean=IMAGENET_MEAN,
                    std=IMAGENET_STD,
                )
            )
            config.augment.random_crop_padding, config.augment.hflip = 0, False
            config.num_epochs = 30.0
            config.eval_every_epochs = 5.0
            config.log_every_steps = 100
            config.checkpoint.every_steps = 1000
        elif name == "birds":
            config.data = ml_collections.ConfigDict(
                dict(
                    name="folder",
                    root="data/birds",  # holds train/, valid/, test/ of class folders
                    image_size=224,
                    mean=IMAGENET_MEAN,
                    std=IMAGENET_STD,
                )
            )
            config.augment.random_crop_padding, config.augment.hflip = 0, False
            config.batch_size = 64
            config.eval_batch_size = 64
            config.num_epochs = 30.0
            config.eval_every_epochs = 5.0
        elif name == "cifar_stem":
            if config.model.name != "resnet18":
                config.model = _model("resnet18", offline)
            config.model.stem = "cifar"
        elif name == "dropout":
            config.model.dropout = 0.5
        elif name == "wd":
            config.optimizer.weight_decay = 0.1
        elif name == "aug":
            config.augment.random_crop_padding = 4
            config.augment.hflip = True
        elif name == "noaug":
            config.augment.random_crop_padding = 0
            config.augment.hflip = False
        elif name == "rrc":
            config.augment.random_resized_crop = True
            config.augment.rrc_scale = (0.5, 1.0)
            config.augment.hflip = True
        elif name == "early_stop":
            config.early_stopping.metric = "val/per_class_accuracy"
            config.early_stopping.patience = 3
        elif name == "smoke":
            shrink_for_smoke(config, {"shapes": (64, 24, 24)}, batch=16, steps=6, eval_every=3)
    return config


def get_sweep() -> Sweep:
    """E1's comparison: the three models, each without regulariser, with dropout 0.5 and with
    augmentation (crop and flip, the offline default), and the linear baseline
    (`--mode=sweep`, dllab_jax/lab). Test numbers are the best checkpoint's (by validation
    per-class accuracy), as the handout keeps it. The handout's table compares the models
    unregularised, so the model ranking is read from the `noaug` rows."""
    models = (("resnet18", "ResNet-18"), ("cnn", "CNN"), ("vit", "ViT"))
    reference = {"resnet18": 0.717, "cnn": 0.702, "vit": 0.635}
    rows = []
    for model, label in models:
        rows.append(
            Row(
                model,
                f"{model},noaug",
                label=label,
                reference={"best/test/accuracy": reference[model]},
            )
        )
        rows.append(
            Row(f"{model}_dropout", f"{model},noaug,dropout", label=f"{label} + dropout 0.5")
        )
        rows.append(Row(f"{model}_aug", model, label=f"{label} + crop and flip"))
    rows.append(Row("linear", "linear", label="linear on pixels"))
    return Sweep(
        experiment="E1",
        title="Image classification: ResNet-18, CNN and ViT, with and without regularisers",
        rows=tuple(rows),
        metrics=(
            "best/test/accuracy",
            "best/test/per_class_accuracy",
            "best/val/per_class_accuracy",
        ),
        findings=(
            Finding(
                "ResNet-18 beats the small CNN, which beats the ViT (71.7 / 70.2 / 63.5% test).",
                "best/test/accuracy",
                order=("resnet18", "cnn", "vit"),
            ),
            Finding(
                "Dropout changes the CNN's test accuracy little.",
                "best/test/accuracy",
                order=(("cnn", "cnn_dropout"),),
            ),
            Finding(
                "With crop and flip a model gets well past the unregularised table (about 93% "
                "for a CIFAR-stem ResNet-18); offline, the default CNN must reach 0.90.",
                "best/test/accuracy",
                at_least=0.90,
                rows=("cnn_aug",),
            ),
            Finding(
                "Every model is far above a linear model on pixels.",
                "best/test/accuracy",
                order=(("resnet18", "cnn", "vit"), "linear"),
            ),
        ),
        curve="val/per_class_accuracy",
        figures=("confusion_test.png",),
        source="shared/SPEC.md E1 (the seed report's table, CIFAR-10 test accuracy)",
    )
