"""TwoTower (dllab_jax/models/two_tower.py) and its towers' sizes: exact parameter counts (hand
formula at TWO_TOWER_SIZES["tiny"], transformers' count at "blip_base") and the temperature.
Numerics against transformers' BLIP, through the importer, are tests/weights/test_hf_blip.py's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest
import torch
from model_checks import blip_retrieval_torch_count, blip_vision_param_count, count
from transformers import BlipConfig, BlipForImageTextRetrieval

from dllab_jax.models.blip_sizes import TWO_TOWER_SIZES
from dllab_jax.models.two_tower import TwoTower
from dllab_jax.weights.convert import abstract_variables
from dllab_jax.weights.hf_blip import image_text_inputs


def abstract_params(module: TwoTower) -> dict:
    return abstract_variables(module, *image_text_inputs(module))


def test_parameter_count_tiny_preset():
    s = TWO_TOWER_SIZES["tiny"]
    v, x = s["image"], s["text"]
    d, t, mt, e = v["hidden_size"], x["hidden_size"], x["mlp_dim"], s["embed_dim"]
    vision = blip_vision_param_count(v)
    text = (
        (x["vocab_size"] + x["max_position_embeddings"]) * t + 2 * t
        + x["num_layers"] * (4 * (t * t + t) + 2 * t + t * mt + mt + mt * t + t + 2 * t)
    )  # fmt: skip
    projections = d * e + e + t * e + e
    params = abstract_params(TwoTower(**s))
    assert count(params["vision_model"]) == vision == 1_801_920
    assert count(params) == vision + text + projections == 2_375_488


def test_parameter_count_blip_base():
    with torch.device("meta"):  # shapes only: no 900 MB allocation
        ref = BlipForImageTextRetrieval(BlipConfig(text_config=dict(num_attention_heads=12)))
    ours = count(abstract_params(TwoTower(**TWO_TOWER_SIZES["blip_base"])))
    print(f"blip_base TwoTower parameters: {ours:,}")
    assert ours == blip_retrieval_torch_count(ref) == 195_375_872


def test_temperature_learned_is_a_parameter_fixed_is_not():
    learned = TwoTower(init_temperature=0.07, learn_temperature=True)
    assert abstract_params(learned)["log_temperature"].shape == ()
    variables = learned.init(jax.random.key(0), method="temperature")
    assert float(variables["params"]["log_temperature"]) == pytest.approx(math.log(0.07))
    assert float(learned.apply(variables, method="temperature")) == pytest.approx(0.07)
    tau = learned.apply({"params": {"log_temperature": jnp.log(0.5)}}, method="temperature")
    assert float(tau) == pytest.approx(0.5)

    fixed = TwoTower(init_temperature=0.2)
    assert "log_temperature" not in abstract_params(fixed)
    assert float(fixed.apply({"params": {}}, method="temperature")) == pytest.approx(0.2)
