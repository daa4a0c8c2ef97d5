"""BlipCaptioner (dllab_jax/models/captioner.py): exact parameter counts (hand formula at
CAPTIONER_SIZES["tiny"], transformers' count at "blip_base"). Its logits, cache and decoding
against transformers' captioner, through the importer, are
tests/weights/test_hf_blip_captioner.py's.
"""

from __future__ import annotations

import torch
from model_checks import blip_vision_param_count, count
from transformers import BlipConfig, BlipForConditionalGeneration

from dllab_jax.models.blip_sizes import CAPTIONER_SIZES
from dllab_jax.models.captioner import BlipCaptioner
from dllab_jax.weights.hf_blip_captioner import (
    abstract_params,
)


def test_parameter_count_tiny_preset():
    s = CAPTIONER_SIZES["tiny"]
    i, x = s["image"], s["text"]
    d, t, mt, v = i["hidden_size"], x["hidden_size"], x["mlp_dim"], x["vocab_size"]
    vision = blip_vision_param_count(i)
    cross = 2 * (t * t + t) + 2 * (d * t + t) + 2 * t  # q, o; k, v from the image; LayerNorm
    decoder = (
        (v + x["max_position_embeddings"]) * t + 2 * t
        + x["num_layers"] * (4 * (t * t + t) + 2 * t + cross + t * mt + mt + mt * t + t + 2 * t)
        + t * t + t + 2 * t + v  # LM head: transform dense + LayerNorm, bias (matrix tied)
    )  # fmt: skip
    params = abstract_params(BlipCaptioner(**s))
    assert count(params["vision_model"]) == vision == 234_912
    assert count(params["text_decoder"]) == decoder == 600_960
    assert count(params) == 835_872


def test_parameter_count_blip_base():
    with torch.device("meta"):  # shapes only: no 900 MB allocation
        ref = BlipForConditionalGeneration(BlipConfig(text_config=dict(num_attention_heads=12)))
    ours = abstract_params(BlipCaptioner(**CAPTIONER_SIZES["blip_base"]))
    vision = sum(p.numel() for n, p in ref.named_parameters() if n.startswith("vision_model."))
    print(f"blip_base captioner parameters: {count(ours):,}")
    assert count(ours["vision_model"]) == vision == 86_090_496
    assert count(ours) == sum(p.numel() for p in ref.parameters()) == 223_971_644
