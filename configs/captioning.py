"""E6 image captioning (Freiburg DL Lab 2023/2025): BLIP-style captioner, decoding, BLEU-4.

Offline default: a small captioner on the procedural captioned scenes, its image encoder
initialised from the retrieval experiment's pre-trained tower (`configs/retrieval.py:pretrain`,
trained first if missing) and frozen; the text decoder is trained with the teacher-forced LM
loss on "a picture of " + caption; validation decodes greedily and scores BLEU.
    python main.py --config=configs/captioning.py
    -> checkpoints/captioning/summary.json (`val/bleu4`, `val/bleu1..3`, captions/s).
    Measured 2026-11-23 on 2 CPU cores: 3 min 51 s with checkpoints/retrieval-pretrain present
    (about 5.5 min more when it is made first); val BLEU-4 0.343 (BLEU-1 0.745) greedy, about
    110 captions/s at batch 100 after compilation. The README's E6 table has every decoding
    setting.
Decoding settings are presets, usable at evaluation on a trained run:
    python main.py --config=configs/captioning.py:topk --mode=eval --workdir=checkpoints/captioning

Presets (combine with commas):
    greedy (default), topk (top-k 50, temperature 1.0), topk_t07 (temperature 0.7), topp
    (nucleus 0.9), beam (3 beams); prompts: this_is_a, this_image_depicts, an_image_of (the
    default prompt is "a picture of "); voc_blip (BLIP base from a local Hugging Face
    `BlipForConditionalGeneration` folder on VOC 2012 images with their captions); smoke.
Handout reference (BLEU-4 on VOC val with BLIP base): greedy 0.28, top-k 50 at T 1.0 0.07,
at T 0.7 0.13; prompt "an image of" 0.26.
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
from dllab_jax.models.blip_sizes import BLIP_MEAN, BLIP_STD, CAPTIONER_SIZES

PRESETS = {
    "greedy": "greedy decoding (the default)",
    "topk": "top-k sampling, k 50, temperature 1.0",
    "topk_t07": "top-k sampling, k 50, temperature 0.7",
    "topp": "nucleus sampling, p 0.9",
    "beam": "beam search, 3 beams",
    "this_is_a": "prompt 'this is a '",
    "this_image_depicts": "prompt 'this image depicts '",
    "an_image_of": "prompt 'an image of '",
    "voc_blip": "BLIP base captioner from a local HF folder on VOC 2012 + captions JSON",
    "smoke": "tiny splits and a few steps (tests)",
}
RETRIEVAL_PRETRAIN = "checkpoints/retrieval-pretrain"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    presets = parse_preset(arg, PRESETS)
    config = base_config()  # the loop's keys, documented in dllab_jax/config_utils.py
    config.task = "captioning"
    # The retrieval experiment's images and captions (the same seed: its pre-trained image
    # tower has seen these training images), half the evaluation images (decoding is slow).
    config.data = captioned_shapes.data_config(
        num_val=500, num_test=500, mean=BLIP_MEAN, std=BLIP_STD
    )
    config.tokenizer = ml_collections.ConfigDict(
        dict(
            dir="",  # a Hugging Face tokenizer folder; '' = the init_from run's, or train one
            vocab_size=512,  # WordPiece size when one is trained
            max_len=40,  # prompt + caption + [SEP] during training
        )
    )
    # image: the image tower's arguments, the retrieval pre-training's (VISION_SIZES["small"]),
    # so its weights load by name; text: the decoder's (vocab_size, hidden_size, num_layers,
    # num_heads, mlp_dim, max_position_embeddings = the longest sequence, ...).
    config.model = ml_collections.ConfigDict(
        dict(name="blip_captioner", **CAPTIONER_SIZES["tiny"], dtype="float32")
    )
    config.label_smoothing = 0.0  # BLIP fine-tunes its captioner with 0.1
    config.decoding = ml_collections.ConfigDict(
        dict(
            prompt="a picture of ",  # BLIP's captioning prompt
            strategy="greedy",  # greedy | top_k | top_p | beam
            max_length=30,  # tokens, prompt included (the handout's setting)
            min_length=10,  # no [SEP] before this many tokens, prompt included
            top_k=50,
            top_p=0.9,
            temperature=1.0,
            num_beams=3,
            seed=0,  # sampling key
        )
    )

    config.optimizer.learning_rate = 5e-4
    config.optimizer.weight_decay = 0.05
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    # The pre-trained image tower stays frozen: no updates, inference mode, no backward pass.
    config.optimizer.trainable = "text_decoder/.*"
    config.num_epochs = 4.0
    config.batch_size = 128
    config.eval_batch_size = 100
    config.eval_every_epochs = 2.0
    config.checkpoint.best_metric = "val/bleu4"
    config.init_from.workdir = RETRIEVAL_PRETRAIN
    config.init_from.target_prefix = "vision_model/"
    config.init_from.source_prefix = "vision_model/"
    config.init_from.make_with = "configs/retrieval.py:pretrain"

    for name in presets:
        if name == "topk":
            config.decoding.strategy, config.decoding.temperature = "top_k", 1.0
        elif name == "topk_t07":
            config.decoding.strategy, config.decoding.temperature = "top_k", 0.7
        elif name == "topp":
            config.decoding.strategy = "top_p"
        elif name == "beam":
            config.decoding.strategy = "beam"
        elif name == "this_is_a":
            config.decoding.prompt = "this is a "
        elif name == "this_image_depicts":
            config.decoding.prompt = "this image depicts "
        elif name == "an_image_of":
            config.decoding.prompt = "an image of "
        elif name == "voc_blip":
            config.data = ml_collections.ConfigDict(
                dict(
                    name="voc_captions",
                    root="data/VOCdevkit/VOC2012",
                    captions_json="data/voc_captions.json",
                    image_size=384,
                    skip_uncaptioned=False,
                    mean=BLIP_MEAN,
                    std=BLIP_STD,
                )
            )
            blip_folder = "data/blip-image-captioning-base"
            config.model = ml_collections.ConfigDict(
                dict(name="blip_captioner", **CAPTIONER_SIZES["blip_base"], dtype="float32")
            )
            config.init_from.workdir = blip_folder
            config.init_from.format = "hf_blip_captioner"
            config.init_from.target_prefix = config.init_from.source_prefix = ""
            config.init_from.make_with = ""
            config.tokenizer.dir = blip_folder
            config.tokenizer.vocab_size = config.model.text.vocab_size
            # The handout evaluates the published captioner without training it.
            config.num_train_steps = 1
            config.optimizer.learning_rate = 0.0
            config.batch_size = config.eval_batch_size = 16
        elif name == "smoke":
            shrink_for_smoke(
                config,
                {"captioned_shapes": (64, 16, 16)},
                batch=16,
                eval_batch=8,
                steps=4,
                eval_every=2,
            )
            use_smoke_pretraining(config)
    return config


def get_sweep() -> Sweep:
    """E6's comparison: decoding settings and prompts (`--mode=sweep`). Each row trains the
    same captioner (deterministic) and decodes it its way."""
    rows = (
        Row("greedy", "greedy", reference={"val/bleu4": 0.28}),
        Row("topk_t07", "topk_t07", label="top-k 50, T 0.7", reference={"val/bleu4": 0.13}),
        Row("topk", "topk", label="top-k 50, T 1.0", reference={"val/bleu4": 0.07}),
        Row(
            "an_image_of",
            "an_image_of",
            label='greedy, "an image of"',
            reference={"val/bleu4": 0.26},
        ),
    )
    return Sweep(
        experiment="E6",
        title="Image captioning: decoding settings and prompts",
        rows=rows,
        metrics=("val/bleu4", "val/bleu1"),
        findings=(
            Finding(
                "Greedy decoding beats top-k sampling at T 0.7, which beats T 1.0 "
                "(BLEU-4 0.28 / 0.13 / 0.07).",
                "val/bleu4",
                order=("greedy", "topk_t07", "topk"),
            ),
            Finding(
                'The prompt "an image of " scores close to "a picture of " (0.26 / 0.28).',
                "val/bleu4",
                order=(("greedy", "an_image_of"),),
            ),
        ),
        curve="val/bleu4",
        figures=("captions_val.png",),
        source="shared/SPEC.md E6 (BLIP base on PASCAL VOC 2012 val, BLEU-4)",
    )
