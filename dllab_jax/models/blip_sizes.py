"""The sizes of BLIP's towers and models: one table that configs, tests and benchmarks reuse.

A tower's size is a dict of its constructor arguments, exactly what `config.model.image`
(`BlipVisionEncoder`) and `config.model.text` (`BlipTextEncoder` / the captioner's decoder)
hold, as big_vision's two towers nest theirs. A model's size names one entry of each tower
table, so two models that must share weights share an entry by construction: the captioner
loads the retrieval pre-training's image tower by name, hence `VISION_SIZES["small"]` in both
`configs/retrieval.py` and `configs/captioning.py`.

No jax here: configs import this module.
"""

from __future__ import annotations

from typing import Any

# BLIP normalises images with CLIP's per-channel statistics (HF `BlipImageProcessor`).
BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)


_VISION_KEYS = ("image_size", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")
_TEXT_KEYS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")


def _vision(*sizes: int) -> dict[str, Any]:
    """`BlipVisionEncoder` arguments; LayerNorm epsilon 1e-5, dropout rates BLIP's 0."""
    return dict(zip(_VISION_KEYS, sizes, strict=True), layer_norm_eps=1e-5)


def _text(*sizes: int, positions: int) -> dict[str, Any]:
    """`BlipTextEncoder` size arguments; LayerNorm epsilon 1e-12 (BERT's)."""
    sized = zip(_TEXT_KEYS, sizes, strict=True)
    return dict(sized, max_position_embeddings=positions, layer_norm_eps=1e-12)


# Image towers: (image_size, patch_size, hidden_size, num_layers, num_heads, mlp_dim).
VISION_SIZES: dict[str, dict[str, Any]] = {
    # 32x32 images in 8x8 = 64 patches of 4x4; 1,801,920 parameters.
    "tiny": _vision(32, 4, 192, 4, 3, 768),
    # The offline experiments' tower (retrieval pre-training, then the captioner's image
    # tower): 32x32 images, 234,912 parameters.
    "small": _vision(32, 4, 96, 2, 3, 384),
    # BLIP's ViT-B/16 at 384 px (HF `Salesforce/blip-*-base`); 86,090,496 parameters.
    "base": _vision(384, 16, 768, 12, 12, 3072),
}

# Text towers: (vocab_size, hidden_size, num_layers, num_heads, mlp_dim), positions =
# max_position_embeddings; vocab_size must hold the tokenizer (configs set it).
TEXT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": _text(1024, 128, 2, 2, 512, positions=35),
    # The offline retrieval text tower (35 tokens, BLIP's retrieval maximum).
    "small": _text(512, 96, 2, 3, 384, positions=35),
    # The offline captioning decoder: 40 positions, prompt + caption + [SEP].
    "small_decoder": _text(512, 128, 2, 4, 512, positions=40),
    # BERT-base as BLIP uses it (vocabulary 30524 with [DEC] and [ENC]).
    "base": _text(30524, 768, 12, 12, 3072, positions=512),
}

# `TwoTower(**TWO_TOWER_SIZES[name])`, or in a config `config.model.update(...)`.
TWO_TOWER_SIZES: dict[str, dict[str, Any]] = {
    # 2,375,488 parameters at vocab 1024.
    "tiny": dict(image=VISION_SIZES["tiny"], text=TEXT_SIZES["tiny"], embed_dim=128),
    # configs/retrieval.py's offline model.
    "small": dict(image=VISION_SIZES["small"], text=TEXT_SIZES["small"], embed_dim=128),
    # BLIP retrieval base (HF `Salesforce/blip-itm-base-coco`); 195,375,872 parameters (the
    # checkpoint's ITM cross-attention and head are not used).
    "blip_base": dict(image=VISION_SIZES["base"], text=TEXT_SIZES["base"], embed_dim=256),
}

# `BlipCaptioner(**CAPTIONER_SIZES[name])`.
CAPTIONER_SIZES: dict[str, dict[str, Any]] = {
    # configs/captioning.py's offline model: the retrieval pre-training's image tower, so it
    # loads from there by name; 835,872 parameters at vocab 512 (decoder 600,960).
    "tiny": dict(image=VISION_SIZES["small"], text=TEXT_SIZES["small_decoder"]),
    # BLIP captioning base (HF `Salesforce/blip-image-captioning-base`): 223,971,644
    # parameters as PyTorch counts them (the tied LM head matrix once).
    "blip_base": dict(image=VISION_SIZES["base"], text=TEXT_SIZES["base"]),
}
