"""E7 image-text retrieval (Freiburg DL Lab 2023/2025): two towers, symmetric InfoNCE.

Offline default = the handout's "from scratch" strategy on procedural captioned scenes: new
random projections on top of pretrained, frozen towers, trained with InfoNCE at tau = 0.1.
The "pretrained" towers are this project's own small two-tower model, pre-trained end to end
on the procedural captions (`:pretrain`); if `checkpoints/retrieval-pretrain` is missing the
default trains it first and says so.
    python main.py --config=configs/retrieval.py
    -> checkpoints/retrieval/summary.json (`val/i2t_R@1`, `val/t2i_R@1`, ...).
    Measured 2026-11-23 on 2 CPU cores with no checkpoints present: 7 min 21 s (pre-training 328 s
    included); val R@1 image->text 0.196, text->image 0.138 (R@10 0.719 / 0.723), test R@1
    0.166 / 0.143; chance is 0.001. The README's E7 table has the other presets.

Presets (combine with commas):
    pretrain   the towers and projections end to end, learned temperature (the stand-in for
               BLIP's pre-training), checkpoints/retrieval-pretrain
    scratch    new random projections, lr 1e-3, wd 1e-3, 5 epochs (default)
    finetune   the pretrained projections, lr 1e-5, wd 0, 3 epochs
    tau05, tau03, tau02    temperature 0.5 / 0.3 / 0.2 instead of 0.1
    voc_blip   the faithful recipe: VOC 2012 images + captions JSON at 384 px, BLIP ViT-B/16 +
               BERT-base towers from a local Hugging Face BLIP folder
               (`BlipForImageTextRetrieval` format); combine with scratch or finetune
    smoke      tiny splits and a few steps (tests)
Handout reference (R@1 image->text / text->image on VOC val): scratch 0.43 / 0.41,
fine-tune 0.59 / 0.55, pretrained heads without training about 0.54.
"""

import ml_collections

from dllab_jax.config_utils import (
    base_config,
    parse_preset,
    shrink_for_smoke,
    use_smoke_pretraining,
)
from dllab_jax.data.sources import captioned_shapes
from dllab_jax.lab.spec import Finding, Row, Sweep
from dllab_jax.models.blip_sizes import BLIP_MEAN, BLIP_STD, TWO_TOWER_SIZES

PRESETS = {
    "pretrain": "train towers and projections end to end (the offline 'pretrained' model)",
    "scratch": "new random projections on frozen pretrained towers (the default)",
    "finetune": "pretrained projections fine-tuned on frozen towers",
    "tau05": "temperature 0.5",
    "tau03": "temperature 0.3",
    "tau02": "temperature 0.2",
    "voc_blip": "VOC 2012 + captions JSON, BLIP base towers from a local HF folder",
    "smoke": "tiny splits and a few steps (tests)",
}
PRETRAIN_WORKDIR = "checkpoints/retrieval-pretrain"
PROJECTIONS = "(vision_proj|text_proj)/.*"


def _two_tower(size: str) -> ml_collections.ConfigDict:
    """The two towers at `TWO_TOWER_SIZES[size]`, each tower a nested sub-config of its
    constructor arguments ("small" pre-trains on 2 CPU cores in minutes: 32x32 images, 35
    tokens; its image tower is the captioner's, configs/captioning.py)."""
    return ml_collections.ConfigDict(
        dict(
            name="two_tower",
            # image: image_size, patch_size, hidden_size, num_layers, num_heads, mlp_dim, ...
            # text: vocab_size (>= the tokenizer's size), hidden_size, ...,
            # max_position_embeddings; embed_dim: the shared embedding's size
            **TWO_TOWER_SIZES[size],
            init_temperature=0.1,  # tau; fixed unless learn_temperature
            learn_temperature=False,
            dtype="float32",
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    presets = parse_preset(arg, PRESETS)
    config = base_config()  # the loop's keys, documented in dllab_jax/config_utils.py
    config.task = "retrieval"
    # 20k/1k/1k procedural 32x32 images, 5 captions each, half in attribute-swapped pairs;
    # BLIP normalises with CLIP's statistics.
    config.data = captioned_shapes.data_config(mean=BLIP_MEAN, std=BLIP_STD)
    config.tokenizer = ml_collections.ConfigDict(
        dict(
            dir="",  # a Hugging Face tokenizer folder; '' = the init_from run's, or train one
            vocab_size=512,  # WordPiece size when one is trained on the training captions
            max_len=35,  # BLIP's retrieval maximum
        )
    )
    config.model = _two_tower("small")

    # The handout's "from scratch": new projections on frozen pretrained towers. What
    # `trainable` leaves out is frozen: no updates, and those towers run in inference mode
    # behind stop_gradient (no backward pass through them).
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 1e-3
    config.optimizer.trainable = PROJECTIONS
    config.num_epochs = 5.0
    config.batch_size = 128
    config.eval_batch_size = 200
    config.eval_every_epochs = 1.0
    config.checkpoint.best_metric = "val/mean_R@1"  # (i2t R@1 + t2i R@1) / 2
    config.init_from.workdir = PRETRAIN_WORKDIR
    config.init_from.dont_load = (PROJECTIONS,)  # new random projections
    config.init_from.make_with = "configs/retrieval.py:pretrain"

    for name in presets:
        if name == "pretrain":
            config.model.learn_temperature = True
            config.model.init_temperature = 0.07  # CLIP's and BLIP's initial tau
            config.optimizer.trainable = ".*"
            config.optimizer.learning_rate = 1e-3
            config.optimizer.weight_decay = 0.05
            config.optimizer.schedule = "cosine"
            config.optimizer.warmup_steps = 200
            config.num_epochs = 8.0
            config.init_from.workdir = ""
            config.init_from.dont_load = ()
            config.init_from.make_with = ""
        elif name == "finetune":
            config.init_from.dont_load = ()  # keep the pretrained projections
            config.optimizer.learning_rate = 1e-5
            config.optimizer.weight_decay = 0.0
            config.num_epochs = 3.0
        elif name.startswith("tau"):
            config.model.init_temperature = {"tau05": 0.5, "tau03": 0.3, "tau02": 0.2}[name]
        elif name == "voc_blip":
            config.data = ml_collections.ConfigDict(
                dict(
                    name="voc_captions",
                    root="data/VOCdevkit/VOC2012",  # JPEGImages/, ImageSets/Segmentation/
                    captions_json="data/voc_captions.json",  # image id -> caption(s)
                    image_size=384,
                    skip_uncaptioned=False,
                    mean=BLIP_MEAN,
                    std=BLIP_STD,
                )
            )
            config.model = _two_tower("blip_base")
            blip_folder = "data/blip-itm-base-coco"  # a BlipForImageTextRetrieval folder
            config.init_from.workdir = blip_folder
            config.init_from.format = "hf_blip"
            config.init_from.make_with = ""
            config.tokenizer.dir = blip_folder  # BLIP's tokenizer files sit beside the weights
            config.tokenizer.vocab_size = config.model.text.vocab_size
            config.batch_size = 32
            config.eval_batch_size = 32
        elif name == "smoke":
            shrink_for_smoke(
                config,
                {"captioned_shapes": (64, 24, 24)},
                batch=16,
                eval_batch=8,
                steps=6,
                eval_every=3,
            )
            use_smoke_pretraining(config)  # towers from a smoke pre-training run
    return config


def get_sweep() -> Sweep:
    """E7's comparison: new projections, fine-tuned projections and the pre-trained heads, and
    the temperature (`--mode=sweep`)."""
    return Sweep(
        experiment="E7",
        title="Image-text retrieval: fine-tuning against training the projections from scratch",
        rows=(
            Row(
                "scratch",
                "scratch",
                label="new projections, tau 0.1",
                reference={"val/i2t_R@1": 0.43, "val/t2i_R@1": 0.41},
            ),
            Row(
                "finetune",
                "finetune",
                label="pre-trained projections fine-tuned",
                reference={"val/i2t_R@1": 0.59, "val/t2i_R@1": 0.55},
            ),
            Row(
                "pretrained",
                "pretrain",
                label="pre-trained heads (the pre-training run)",
                reference={"val/i2t_R@1": 0.54},
            ),
            Row("tau05", "tau05", label="new projections, tau 0.5"),
            Row("tau03", "tau03", label="new projections, tau 0.3"),
            Row("tau02", "tau02", label="new projections, tau 0.2"),
        ),
        metrics=("val/i2t_R@1", "val/t2i_R@1", "val/mean_R@1", "val/i2t_R@10"),
        findings=(
            Finding(
                "Fine-tuning beats the pre-trained heads, which beat new projections "
                "(R@1 image->text 0.59 / 0.54 / 0.43).",
                "val/mean_R@1",
                order=("finetune", "pretrained", "scratch"),
            ),
            Finding(
                "A lower temperature retrieves better: tau 0.2 > 0.3 > 0.5.",
                "val/mean_R@1",
                order=("tau02", "tau03", "tau05"),
            ),
        ),
        curve="val/mean_R@1",
        bars=("val/i2t_R@", "val/t2i_R@"),
        figures=("retrieval_val.png",),
        source="shared/SPEC.md E7 (BLIP on PASCAL VOC 2012 val; the temperatures: issue 17)",
    )
