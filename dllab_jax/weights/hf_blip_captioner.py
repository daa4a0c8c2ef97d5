"""`config.init_from.format = "hf_blip_captioner"`: a HF `BlipForConditionalGeneration`
folder as `BlipCaptioner`.

from dllab_jax.weights.hf_blip_captioner import captioner_from_hf
model, variables = captioner_from_hf("/path/to/blip-image-captioning-base")  # a local folder
logits = model.apply(variables, images, input_ids, attention_mask)

The folder layout, the reader and the renaming rule are `hf_blip`'s: our parameter path
`text_decoder/bert/encoder/layer_3/crossattention/self/key/kernel` is the HF key
`text_decoder.bert.encoder.layer.3.crossattention.self.key.weight`, transposed, and
`text_decoder/cls/predictions/bias` is `text_decoder.cls.predictions.bias`. The LM head's
output matrix is the word embedding (tied, as BLIP's); a checkpoint that stores a different
`cls.predictions.decoder.weight` is refused rather than loaded wrongly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax import registry
from dllab_jax.errors import UserError
from dllab_jax.models.captioner import BlipCaptioner
from dllab_jax.weights.convert import abstract_variables
from dllab_jax.weights.hf_blip import (
    image_text_inputs,
    params_from_state_dict,
    towers_from_hf_config,
)
from dllab_jax.weights.reader import model_folder, published, read_hf_config, read_hf_state_dict

_WORD_EMBEDDINGS = "text_decoder.bert.embeddings.word_embeddings.weight"
_OUTPUT_WEIGHT = "text_decoder.cls.predictions.decoder.weight"


def captioner_kwargs_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`BlipCaptioner` constructor arguments (the two towers) from a BLIP `config.json` dict.

    Raises:
      UserError: not a BLIP config, or an activation other than the exact GELU.
    """
    return towers_from_hf_config(config)


def abstract_params(module: BlipCaptioner) -> dict:
    """The captioner's parameter shapes, traced without computing anything."""
    return abstract_variables(module, *image_text_inputs(module))


def captioner_params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], module: BlipCaptioner
) -> dict:
    """`BlipCaptioner` parameters from HF `BlipForConditionalGeneration` tensors.

    Args:
      state_dict: HF key -> array (torch layout), e.g. from `reader.read_hf_state_dict`.
      module: the captioner whose sizes match the checkpoint.

    Returns:
      The nested `params` dict (float32 numpy).

    Raises:
      UserError: a key is missing, a tensor has the wrong shape, or the LM head is not tied
        to the word embedding.
    """
    params = params_from_state_dict(state_dict, abstract_params(module), prefix="")
    if _OUTPUT_WEIGHT in state_dict:
        output = np.asarray(state_dict[_OUTPUT_WEIGHT], np.float32)
        embedding = np.asarray(state_dict[_WORD_EMBEDDINGS], np.float32)
        if output.shape != embedding.shape or not np.array_equal(output, embedding):
            raise UserError(
                f"BLIP checkpoint tensor {_OUTPUT_WEIGHT!r} differs from {_WORD_EMBEDDINGS!r}; "
                "BlipCaptioner ties the LM head to the word embedding as BLIP does"
            )
    return params


def captioner_from_hf(folder: str | Path, **overrides) -> tuple[BlipCaptioner, dict]:
    """A `BlipCaptioner` and its variables from a local `BlipForConditionalGeneration` folder.

    Args:
      folder: holds `config.json` and the weights (see `reader.read_hf_state_dict`).
      **overrides: other `BlipCaptioner` arguments, e.g. `dtype=jnp.bfloat16`.

    Returns:
      (module, {"params": ...}) with the sizes of the folder's config.

    Raises:
      UserError: the folder, its config or its weights are missing or do not fit.
    """
    folder = model_folder(folder, "BLIP captioner")
    kwargs = captioner_kwargs_from_hf_config(read_hf_config(folder))
    module = BlipCaptioner(**{**kwargs, **overrides})
    params = captioner_params_from_state_dict(read_hf_state_dict(folder), module)
    return module, {"params": jax.tree.map(jnp.asarray, params)}


@registry.weight_formats.register("hf_blip_captioner")
def read_init_variables(folder: str | Path, which: str = "best", *, sharding=None):
    """The `BlipCaptioner` parameters of a Hugging Face `BlipForConditionalGeneration`
    folder, for loading by name into a run's model (`which` is ignored)."""
    del which
    _, variables = captioner_from_hf(folder)
    return published({"params": variables["params"]}, folder, sharding)
