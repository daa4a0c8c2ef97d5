"""Loads Hugging Face BLIP checkpoints (PyTorch layout) into the Flax modules of `blip.py`.

from dllab_jax.models.blip_import import two_tower_from_hf
model, variables = two_tower_from_hf("/path/to/blip-itm-base-coco")  # a local folder
out = model.apply(variables, images, input_ids, attention_mask)

A folder holds `config.json` and `model.safetensors` (read with `safetensors.numpy`, no
torch), sharded safetensors with `model.safetensors.index.json`, or `pytorch_model.bin`
(needs torch). Our parameter names mirror HF's, so the mapping is a rule on names rather
than a table: the Flax path `encoder/layer_3/attention/self/query/kernel` under a prefix
`text_encoder.` is the HF key `text_encoder.encoder.layer.3.attention.self.query.weight`,
transposed. The rule walks our parameter tree, so every parameter must be found in the
checkpoint with the right shape (a `UserError` naming the key otherwise); checkpoint tensors
the module does not use are ignored (`itm_head`, the text tower's `crossattention` blocks in
text-only mode).

The captioning model reuses the per-tower functions with other prefixes:
`BlipForConditionalGeneration` keeps its image tower under `vision_model.` and its decoder's
BERT (same layout plus cross-attention) under `text_decoder.bert.`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from dllab_jax.errors import UserError
from dllab_jax.models.blip import BlipTextEncoder, BlipVisionEncoder, TwoTower

# transformers 5 `BlipVisionConfig` / `BlipTextConfig` defaults, for keys a config.json omits.
_HF_VISION_DEFAULTS = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=384,
    patch_size=16,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
)
_HF_TEXT_DEFAULTS = dict(
    vocab_size=30524,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=512,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)

# Our stacks are `layers_<i>` / `layer_<i>`; HF's are ModuleLists `layers.<i>` / `layer.<i>`.
_STACK = re.compile(r"^(layers?)_(\d+)$")
# Flax leaf name -> torch name. Dense/Conv kernels are also laid out differently (below).
_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def hf_key(path: tuple[str, ...], prefix: str = "") -> str:
    """The HF state-dict key of a Flax parameter path (names mirror HF by construction).

    Args:
      path: e.g. ("encoder", "layers_0", "self_attn", "qkv", "kernel").
      prefix: prepended as is, e.g. "vision_model." (ends with a dot unless empty).

    Returns:
      e.g. "vision_model.encoder.layers.0.self_attn.qkv.weight".
    """
    *modules, leaf = path
    names = [_STACK.sub(r"\1.\2", m) for m in modules] + [_LEAF.get(leaf, leaf)]
    return prefix + ".".join(names)


def to_flax_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    """A torch tensor in our layout: Linear [out, in] -> [in, out], Conv OIHW -> HWIO."""
    if leaf == "kernel":
        return array.T if array.ndim == 2 else array.transpose(2, 3, 1, 0)
    return array


def torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Inverse of `to_flax_layout` on shapes: an expected shape in the checkpoint's terms."""
    if leaf == "kernel":
        return shape[::-1] if len(shape) == 2 else (shape[3], shape[2], shape[0], shape[1])
    return shape


def params_from_tensors(
    tensors: Mapping[str, np.ndarray],
    abstract_params: Mapping[str, Any],
    key_of: Callable[[tuple[str, ...]], str],
    *,
    what: str,
    model: str = "the model",
    hint: str = "is it a checkpoint of this model type and size?",
) -> dict:
    """Fills a parameter tree from torch-layout tensors, each checked for presence and shape.

    The one conversion loop of the importers (BLIP, the captioner, DINO).

    Args:
      tensors: checkpoint key -> array (torch layout).
      abstract_params: the module's parameter tree (arrays or `jax.ShapeDtypeStruct`s), e.g.
        from `jax.eval_shape(module.init, ...)["params"]`.
      key_of: our parameter path -> checkpoint key.
      what: the checkpoint for messages, e.g. "BLIP checkpoint".
      model: the model for messages, e.g. "the model (hidden_size=384, ...)".
      hint: what a missing key may mean.

    Returns:
      A nested dict of float32 numpy arrays shaped as `abstract_params`.

    Raises:
      UserError: a parameter's key is missing, or its tensor has the wrong shape.
    """
    out = {}
    for path, target in flatten_dict(dict(abstract_params)).items():
        key = key_of(path)
        if key not in tensors:
            raise UserError(
                f"{what} has no tensor {key!r} (for parameter {'/'.join(path)}); {hint}"
            )
        array = np.asarray(tensors[key], dtype=np.float32)
        expected = torch_shape(path[-1], tuple(target.shape))
        if array.shape != expected:
            raise UserError(
                f"{what} tensor {key!r} has shape {array.shape}, {model} needs {expected}; "
                "the checkpoint and the config do not match"
            )
        out[path] = np.ascontiguousarray(to_flax_layout(path[-1], array))
    return unflatten_dict(out)


def params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], abstract_params: Mapping[str, Any], prefix: str = ""
) -> dict:
    """`params_from_tensors` for HF BLIP tensors under a key prefix (e.g.
    "text_decoder.bert."), whose names our modules mirror."""
    return params_from_tensors(
        state_dict, abstract_params, lambda path: hf_key(path, prefix), what="BLIP checkpoint"
    )


def _abstract_params(module, *args) -> dict:
    """The module's parameter shapes, traced without computing anything."""
    return jax.eval_shape(lambda: module.init(jax.random.key(0), *args))["params"]


def vision_encoder_params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], module: BlipVisionEncoder, prefix: str = "vision_model."
) -> dict:
    """Parameters of a `BlipVisionEncoder` from HF `BlipVisionModel` tensors under `prefix`."""
    images = jnp.zeros((1, module.image_size, module.image_size, 3))
    return params_from_state_dict(state_dict, _abstract_params(module, images), prefix)


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
    ids = jnp.zeros((1, 1), jnp.int32)
    args = (ids, None)
    if module.cross_attention:
        args += (jnp.zeros((1, 1, module.encoder_hidden_size or module.hidden_size)),)
    return params_from_state_dict(state_dict, _abstract_params(module, *args), prefix)


def two_tower_params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], module: TwoTower
) -> dict:
    """`TwoTower` parameters from HF `BlipForImageTextRetrieval` tensors.

    Args:
      state_dict: HF key -> array (torch layout), e.g. from `read_hf_state_dict`.
      module: the TwoTower whose sizes match the checkpoint.

    Returns:
      The nested `params` dict (float32 numpy). `log_temperature`, when learned, is not in
      BLIP's retrieval checkpoint and starts at log(module.init_temperature).

    Raises:
      UserError: a key is missing or a tensor has the wrong shape.
    """
    images = jnp.zeros((1, module.image_size, module.image_size, 3))
    ids = jnp.zeros((1, 1), jnp.int32)
    abstract = dict(_abstract_params(module, images, ids, jnp.ones((1, 1), jnp.int32)))
    extra = {}
    if "log_temperature" in abstract:
        del abstract["log_temperature"]
        extra["log_temperature"] = np.asarray(math.log(module.init_temperature), np.float32)
    return {**params_from_state_dict(state_dict, abstract, prefix=""), **extra}


def read_hf_config(folder: str | Path, model: str = "BLIP") -> dict:
    """The folder's `config.json` as a dict (UserError if the folder or file is missing)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UserError(f"no Hugging Face config at {path}; point to a local {model} model folder")
    return json.loads(path.read_text())


def read_hf_state_dict(folder: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a local HF model folder as numpy arrays (torch only for `.bin`)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file() or index.is_file():
        from safetensors.numpy import load_file

        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            shards = ["model.safetensors"]
        state_dict = {}
        for shard in shards:
            state_dict.update(load_file(folder / shard))
        return state_dict
    if (folder / "pytorch_model.bin").is_file():
        try:
            import torch
        except ImportError as e:
            raise UserError(
                f"{folder}/pytorch_model.bin needs torch to read: pip install 'dllab_jax[convert]'"
            ) from e
        tensors = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in tensors.items()}
    raise UserError(
        f"no weights in {folder}: expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin"
    )


def two_tower_kwargs_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`TwoTower` constructor arguments from a BLIP `config.json` dict.

    Raises:
      UserError: not a BLIP config, or an activation other than the exact GELU.
    """
    if config.get("model_type") != "blip":
        raise UserError(f"config.json has model_type {config.get('model_type')!r}, not 'blip'")
    vision = {**_HF_VISION_DEFAULTS, **(config.get("vision_config") or {})}
    text = {**_HF_TEXT_DEFAULTS, **(config.get("text_config") or {})}
    for name, sub in (("vision_config", vision), ("text_config", text)):
        if sub["hidden_act"] != "gelu":
            raise UserError(f"{name}.hidden_act is {sub['hidden_act']!r}; only 'gelu' is built")
    image_size, patch_size = vision["image_size"], vision["patch_size"]
    if isinstance(image_size, list | tuple):
        if len(set(image_size)) != 1:
            raise UserError(f"vision_config.image_size {image_size} is not square")
        image_size = image_size[0]
    if isinstance(patch_size, list | tuple):
        patch_size = patch_size[0]
    return dict(
        image_size=int(image_size),
        patch_size=int(patch_size),
        vision_hidden_size=vision["hidden_size"],
        vision_layers=vision["num_hidden_layers"],
        vision_heads=vision["num_attention_heads"],
        vision_mlp_dim=vision["intermediate_size"],
        vision_layer_norm_eps=vision["layer_norm_eps"],
        vision_attention_dropout=vision["attention_dropout"],
        vocab_size=text["vocab_size"],
        text_hidden_size=text["hidden_size"],
        text_layers=text["num_hidden_layers"],
        text_heads=text["num_attention_heads"],
        text_mlp_dim=text["intermediate_size"],
        max_text_len=text["max_position_embeddings"],
        text_layer_norm_eps=text["layer_norm_eps"],
        text_dropout=text["hidden_dropout_prob"],
        text_attention_dropout=text["attention_probs_dropout_prob"],
        embed_dim=config.get("image_text_hidden_size", 256),
    )


def two_tower_from_hf(folder: str | Path, **overrides) -> tuple[TwoTower, dict]:
    """A `TwoTower` and its variables from a local `BlipForImageTextRetrieval` folder.

    Args:
      folder: holds `config.json` and the weights (see the module docstring).
      **overrides: other `TwoTower` arguments, e.g. `init_temperature=0.1`,
        `learn_temperature=True`, `dtype=jnp.bfloat16`, or dropout rates.

    Returns:
      (module, {"params": ...}) with the sizes of the folder's config (tiny or base).

    Raises:
      UserError: the folder, its config or its weights are missing or do not fit.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"BLIP model folder {folder} does not exist")
    module = TwoTower(**{**two_tower_kwargs_from_hf_config(read_hf_config(folder)), **overrides})
    params = two_tower_params_from_state_dict(read_hf_state_dict(folder), module)
    return module, {"params": jax.tree.map(jnp.asarray, params)}


def read_init_variables(folder: str | Path, which: str = "best", *, sharding=None):
    """`config.init_from.format = "hf_blip"`: the TwoTower parameters of a Hugging Face
    `BlipForImageTextRetrieval` folder, for loading by name into a run's model.

    Returns:
      ({"params": ...}, meta) as `checkpoint.read_variables` does (`which` is ignored: a
      published folder holds one set of weights).
    """
    del which
    _, variables = two_tower_from_hf(folder)
    params = variables["params"]
    if sharding is not None:
        params = jax.device_put(params, sharding)
    return {"params": params}, {"step": 0, "source": str(folder)}
