"""`config.init_from.format = "hf_blip"`: a Hugging Face BLIP retrieval folder as `TwoTower`.

from dllab_jax.weights.hf_blip import two_tower_from_hf
model, variables = two_tower_from_hf("/path/to/blip-itm-base-coco")  # a local folder
out = model.apply(variables, images, input_ids, attention_mask)

Our parameter names mirror HF's, so the mapping is a rule on names rather than a table: the
Flax path `encoder/layer_3/attention/self/query/kernel` under a prefix `text_encoder.` is the
HF key `text_encoder.encoder.layer.3.attention.self.query.weight`, transposed. The rule walks
our parameter tree (`convert.tree_from_tensors`), so every parameter must be found in the
checkpoint with the right shape; checkpoint tensors the module does not use are ignored
(`itm_head`, the text tower's `crossattention` blocks in text-only mode). The captioner
(`hf_blip_captioner.py`) reuses the tower functions with other prefixes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax import registry
from dllab_jax.errors import UserError
from dllab_jax.models.blip_text import BlipTextEncoder
from dllab_jax.models.blip_vision import BlipVisionEncoder
from dllab_jax.models.two_tower import TwoTower
from dllab_jax.weights.convert import abstract_variables, mirrored_key, tree_from_tensors
from dllab_jax.weights.reader import (
    model_folder,
    published,
    read_hf_config,
    read_hf_state_dict,
    with_hf_defaults,
)


def params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], abstract_params: Mapping[str, Any], prefix: str = ""
) -> dict:
    """Parameters from HF BLIP tensors under a key prefix (e.g. "text_decoder.bert."), whose
    names our modules mirror."""
    return tree_from_tensors(
        state_dict, abstract_params, lambda path: mirrored_key(path, prefix), what="BLIP checkpoint"
    )


def vision_encoder_params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], module: BlipVisionEncoder, prefix: str = "vision_model."
) -> dict:
    """Parameters of a `BlipVisionEncoder` from HF `BlipVisionModel` tensors under `prefix`."""
    images = jnp.zeros((1, module.image_size, module.image_size, 3))
    return params_from_state_dict(state_dict, abstract_variables(module, images), prefix)


def text_encoder_params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], module: BlipTextEncoder, prefix: str = "text_encoder."
) -> dict:
    """Parameters of a `BlipTextEncoder` from HF `BlipTextModel` tensors under `prefix`.

    Args:
      state_dict: HF key -> array.
      module: the text model; with `cross_attention=True` the `crossattention` tensors are
        read too (and must exist).
      prefix: "text_encoder." in `BlipForImageTextRetrieval`, "text_decoder.bert." in
        `BlipForConditionalGeneration`.
    """
    args = (jnp.zeros((1, 1), jnp.int32), None)
    if module.cross_attention:
        args += (jnp.zeros((1, 1, module.encoder_hidden_size or module.hidden_size)),)
    return params_from_state_dict(state_dict, abstract_variables(module, *args), prefix)


def image_text_inputs(module) -> tuple[jnp.ndarray, ...]:
    """One dummy (images, input_ids, attention_mask) for a BLIP model's `init`."""
    side = BlipVisionEncoder(**module.image, parent=None).image_size
    ids = jnp.zeros((1, 1), jnp.int32)
    return jnp.zeros((1, side, side, 3)), ids, jnp.ones((1, 1), jnp.int32)


def two_tower_params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], module: TwoTower
) -> dict:
    """`TwoTower` parameters from HF `BlipForImageTextRetrieval` tensors.

    Args:
      state_dict: HF key -> array (torch layout), e.g. from `reader.read_hf_state_dict`.
      module: the TwoTower whose sizes match the checkpoint.

    Returns:
      The nested `params` dict (float32 numpy). `log_temperature`, when learned, is not in
      BLIP's retrieval checkpoint and starts at log(module.init_temperature).

    Raises:
      UserError: a key is missing or a tensor has the wrong shape.
    """
    abstract = dict(abstract_variables(module, *image_text_inputs(module)))
    extra = {}
    if "log_temperature" in abstract:
        del abstract["log_temperature"]
        extra["log_temperature"] = np.asarray(math.log(module.init_temperature), np.float32)
    return {**params_from_state_dict(state_dict, abstract, prefix=""), **extra}


def _side(value, name: str) -> int:
    """An image or patch side from a config value that may be [h, w]."""
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise UserError(f"vision_config.{name} {value} is not square")
        value = value[0]
    return int(value)


def towers_from_hf_config(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The towers' sub-configs (`image`, `text`) of a BLIP `config.json` dict.

    Raises:
      UserError: not a BLIP config, or an activation other than the exact GELU.
    """
    if config.get("model_type") != "blip":
        raise UserError(f"config.json has model_type {config.get('model_type')!r}, not 'blip'")
    vision = with_hf_defaults(config.get("vision_config"), "BlipVisionConfig")
    text = with_hf_defaults(config.get("text_config"), "BlipTextConfig")
    for name, sub in (("vision_config", vision), ("text_config", text)):
        if sub["hidden_act"] != "gelu":
            raise UserError(f"{name}.hidden_act is {sub['hidden_act']!r}; only 'gelu' is built")
    image = dict(
        image_size=_side(vision["image_size"], "image_size"),
        patch_size=_side(vision["patch_size"], "patch_size"),
        hidden_size=vision["hidden_size"],
        num_layers=vision["num_hidden_layers"],
        num_heads=vision["num_attention_heads"],
        mlp_dim=vision["intermediate_size"],
        layer_norm_eps=vision["layer_norm_eps"],
        attention_dropout=vision["attention_dropout"],
    )
    text = dict(
        vocab_size=text["vocab_size"],
        hidden_size=text["hidden_size"],
        num_layers=text["num_hidden_layers"],
        num_heads=text["num_attention_heads"],
        mlp_dim=text["intermediate_size"],
        max_position_embeddings=text["max_position_embeddings"],
        layer_norm_eps=text["layer_norm_eps"],
        dropout=text["hidden_dropout_prob"],
        attention_dropout=text["attention_probs_dropout_prob"],
    )
    return dict(image=image, text=text)


def two_tower_kwargs_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`TwoTower` constructor arguments from a BLIP `config.json` dict (see
    `towers_from_hf_config`)."""
    return {**towers_from_hf_config(config), "embed_dim": config.get("image_text_hidden_size", 256)}


def two_tower_from_hf(folder: str | Path, **overrides) -> tuple[TwoTower, dict]:
    """A `TwoTower` and its variables from a local `BlipForImageTextRetrieval` folder.

    Args:
      folder: holds `config.json` and the weights (see `reader.read_hf_state_dict`).
      **overrides: other `TwoTower` arguments, e.g. `init_temperature=0.1`,
        `learn_temperature=True`, `dtype=jnp.bfloat16`.

    Returns:
      (module, {"params": ...}) with the sizes of the folder's config (tiny or base).

    Raises:
      UserError: the folder, its config or its weights are missing or do not fit.
    """
    folder = model_folder(folder, "BLIP model")
    module = TwoTower(**{**two_tower_kwargs_from_hf_config(read_hf_config(folder)), **overrides})
    params = two_tower_params_from_state_dict(read_hf_state_dict(folder), module)
    return module, {"params": jax.tree.map(jnp.asarray, params)}


@registry.weight_formats.register("hf_blip")
def read_init_variables(folder: str | Path, which: str = "best", *, sharding=None):
    """The TwoTower parameters of a Hugging Face `BlipForImageTextRetrieval` folder, for
    loading by name into a run's model (`which` is ignored)."""
    del which
    _, variables = two_tower_from_hf(folder)
    return published({"params": variables["params"]}, folder, sharding)
