"""`config.init_from.format = "dino_vit"`: DINO ViT weights (a Hugging Face folder or the
original DINO file) as `DinoViT`, under a segmenter's `backbone/`.

from dllab_jax.weights.dino import read_hf_vit, read_dino_state_dict
kwargs, variables = read_hf_vit("/path/to/dino-vits16")           # config.json + weights
kwargs, variables = read_dino_state_dict("dino_deitsmall16_pretrain.pth")
features = DinoViT(**kwargs).apply(variables, images)            # [B, H/16, W/16, 384]

Two source layouts map onto the parameter names of `dino_vit.py` (its docstring has the
table):

* Hugging Face `ViTModel` (`facebook/dino-vits16`): `embeddings.cls_token`,
  `encoder.layer.N.attention.attention.query.weight`, ..., `layernorm.weight`, read from
  `model.safetensors` (sharded or not; `safetensors.numpy`, no torch) or `pytorch_model.bin`
  (torch). Keys may carry a `vit.` prefix (`ViTFor...` checkpoints); the module names of
  transformers >= 5 in memory (`layers.N.attention.q_proj`, `layers.N.mlp.fc1`) are accepted
  too. Sizes come from `config.json`; `pooler.*` and other heads are ignored.
* The original DINO checkpoint (`dino_deitsmall16_pretrain.pth`, or a training checkpoint
  with `teacher`/`student` entries whose keys carry `module.` and `backbone.` prefixes):
  `cls_token`, `pos_embed`, `patch_embed.proj.weight`, `blocks.N.attn.qkv.weight` (q, k, v
  stacked along the output rows), ..., `norm.weight`. Sizes are inferred from the shapes;
  heads = hidden_size // 64 as in every published DINO ViT (override with `num_heads=`);
  LayerNorm epsilon 1e-6. `head.*` (the DINO projection head) is ignored.

Every `DinoViT` parameter must be found with the right shape, else a one-line `UserError`
names the checkpoint key and both shapes (in the checkpoint's torch layout).
`read_init_variables` is the `config.init_from` reader: it returns the parameters under
`backbone/`, the attribute under which `BackboneSegmenter` holds its `DinoViT`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax import registry
from dllab_jax.errors import UserError
from dllab_jax.models.dino_vit import DinoViT
from dllab_jax.weights.convert import abstract_variables, tree_from_tensors
from dllab_jax.weights.reader import (
    model_folder,
    numpy_tensors,
    published,
    read_hf_config,
    read_hf_state_dict,
    read_weight_file,
    with_hf_defaults,
)

DINO_LAYER_NORM_EPS = 1e-6  # DINO's vision_transformer.py: partial(nn.LayerNorm, eps=1e-6)
DINO_HEAD_DIM = 64  # every published DINO ViT (S: 384/6, B: 768/12) has 64-wide heads

_BLOCK = re.compile(r"^blocks_(\d+)$")
# transformers >= 5 module names inside `layers.N.` -> hub (file) names inside `encoder.layer.N.`
# (what `save_pretrained` writes and the hub serves); layernorm_before/after keep their names.
_HF_V5_TO_FILE = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
# Our module path (after blocks_<i>) -> HF hub module name (after encoder.layer.<i>.).
_HF_BLOCK_MODULES = {
    "norm1": "layernorm_before",
    "attn/query": "attention.attention.query",
    "attn/key": "attention.attention.key",
    "attn/value": "attention.attention.value",
    "attn/proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp/fc1": "intermediate.dense",
    "mlp/fc2": "output.dense",
}
_HF_TOP_MODULES = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed": "embeddings.patch_embeddings.projection",
    "norm": "layernorm",
}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def hf_vit_key(path: tuple[str, ...]) -> str:
    """The HF `ViTModel` hub key of a DinoViT parameter path.

    Args:
      path: e.g. ("blocks_3", "attn", "query", "kernel").

    Returns:
      e.g. "encoder.layer.3.attention.attention.query.weight".
    """
    match = _BLOCK.match(path[0])
    if match:
        module = _HF_BLOCK_MODULES["/".join(path[1:-1])]
        return f"encoder.layer.{match.group(1)}.{module}.{_LEAF[path[-1]]}"
    if len(path) == 1:
        return _HF_TOP_MODULES[path[0]]
    return f"{_HF_TOP_MODULES[path[0]]}.{_LEAF[path[-1]]}"


def dino_key(path: tuple[str, ...]) -> str:
    """The original DINO key of a DinoViT parameter path.

    Query, key and value live in the fused `blocks.N.attn.qkv` tensor; `_split_dino_qkv`
    names their thirds `blocks.N.attn.qkv[query].weight` etc., which is what this returns.

    Args:
      path: e.g. ("blocks_3", "mlp", "fc1", "kernel").

    Returns:
      e.g. "blocks.3.mlp.fc1.weight".
    """
    match = _BLOCK.match(path[0])
    if match:
        modules = list(path[1:-1])
        if modules[-1] in ("query", "key", "value"):
            modules[-1] = f"qkv[{modules[-1]}]"
        return f"blocks.{match.group(1)}.{'.'.join(modules)}.{_LEAF[path[-1]]}"
    if path[0] == "patch_embed":
        return f"patch_embed.proj.{_LEAF[path[-1]]}"
    if len(path) == 1:
        return path[0]
    return f"{path[0]}.{_LEAF[path[-1]]}"


def abstract_params(kwargs: Mapping[str, Any]) -> dict:
    """DinoViT(**kwargs)'s parameter tree of `jax.ShapeDtypeStruct`s (nothing computed)."""
    module = DinoViT(**kwargs)
    side = module.pretrain_image_size
    return abstract_variables(module, jnp.zeros((1, side, side, 3), jnp.float32))


def dino_params_from_tensors(
    tensors: Mapping[str, np.ndarray],
    kwargs: Mapping[str, Any],
    key_of: Callable[[tuple[str, ...]], str],
    what: str,
) -> dict:
    """DinoViT(**kwargs) parameters from checkpoint tensors (`convert.tree_from_tensors`).

    Args:
      tensors: checkpoint key -> array, torch layout.
      kwargs: the DinoViT constructor arguments the parameters must fit.
      key_of: our parameter path -> checkpoint key (`hf_vit_key` or `dino_key`).
      what: the checkpoint's kind for messages, e.g. "DINO checkpoint".

    Raises:
      UserError: a key is missing or a tensor's shape does not fit `kwargs`.
    """
    sizes = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "dtype")
    return tree_from_tensors(
        tensors,
        abstract_params(kwargs),
        key_of,
        what=what,
        model=f"the model ({sizes})",
        hint=f"is it a ViT checkpoint of the expected size ({sizes})?",
    )


# ------------------------------------------------------------------------ Hugging Face


def dino_vit_kwargs_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`DinoViT` constructor arguments from a HF ViT `config.json` dict.

    Raises:
      UserError: not a ViT config, an activation other than the exact GELU, or non-square
        images or patches.
    """
    if config.get("model_type", "vit") != "vit":
        raise UserError(f"config.json has model_type {config.get('model_type')!r}, not 'vit'")
    c = with_hf_defaults(config, "ViTConfig")
    if c["hidden_act"] != "gelu":
        raise UserError(f"config.json hidden_act is {c['hidden_act']!r}; only 'gelu' is built")
    sides = {}
    for name in ("image_size", "patch_size"):
        value = c[name]
        if isinstance(value, list | tuple):
            if len(set(value)) != 1:
                raise UserError(f"config.json {name} {value} is not square; only square is built")
            value = value[0]
        sides[name] = int(value)
    hidden = int(c["hidden_size"])
    return dict(
        patch_size=sides["patch_size"],
        hidden_size=hidden,
        depth=int(c["num_hidden_layers"]),
        num_heads=int(c["num_attention_heads"]),
        mlp_ratio=int(c["intermediate_size"]) / hidden,
        qkv_bias=bool(c["qkv_bias"]),
        layer_norm_eps=float(c["layer_norm_eps"]),
        pretrain_image_size=sides["image_size"],
    )


def canonical_hf_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF ViT tensors under hub names: `vit.` prefix stripped, transformers-5 names renamed."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("vit.")
        match = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if match:
            module = _HF_V5_TO_FILE.get(match.group(2), match.group(2))
            key = f"encoder.layer.{match.group(1)}.{module}.{match.group(3)}"
        out[key] = value
    return out


def read_hf_vit(folder: str | Path, **overrides) -> tuple[dict[str, Any], dict]:
    """DinoViT arguments and variables from a local HF `ViTModel` folder (e.g. dino-vits16).

    Args:
      folder: holds `config.json` and `model.safetensors` (or shards, or `pytorch_model.bin`).
      **overrides: DinoViT arguments replacing the config's, e.g. `dtype=jnp.bfloat16`; a
        size override that does not fit the weights raises UserError.

    Returns:
      (kwargs, {"params": ...}) such that `DinoViT(**kwargs).apply(variables, images)` works.

    Raises:
      UserError: the folder, config or weights are missing or do not fit each other.
    """
    folder = model_folder(folder, "Hugging Face ViT")
    kwargs = {**dino_vit_kwargs_from_hf_config(read_hf_config(folder, "ViT")), **overrides}
    tensors = canonical_hf_state_dict(read_hf_state_dict(folder))
    params = dino_params_from_tensors(tensors, kwargs, hf_vit_key, f"HF ViT checkpoint {folder}")
    return kwargs, {"params": jax.tree.map(jnp.asarray, params)}


# ------------------------------------------------------------------------ original DINO


def dino_backbone_tensors(
    state: Mapping[str, Any], checkpoint_key: str = "teacher"
) -> dict[str, np.ndarray]:
    """The backbone tensors of a DINO checkpoint, unwrapped and with plain keys.

    Args:
      state: a plain backbone state dict, or a DINO training checkpoint holding
        `checkpoint_key` ("teacher" or "student") with `module.`/`backbone.` key prefixes.
      checkpoint_key: which network of a training checkpoint to take (DINO evaluates the
        teacher).

    Returns:
      key -> float32 numpy array without prefixes and without the projection `head.*`.
    """
    if checkpoint_key in state and isinstance(state[checkpoint_key], Mapping):
        state = state[checkpoint_key]
    elif "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out = {}
    for key, value in numpy_tensors(state).items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        if not key.startswith("head."):
            out[key] = value
    return out


def _split_dino_qkv(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replaces each fused `blocks.N.attn.qkv.{weight,bias}` by its q, k, v thirds."""
    out = {}
    for key, value in tensors.items():
        match = re.fullmatch(r"(blocks\.\d+\.attn)\.qkv\.(weight|bias)", key)
        if not match:
            out[key] = value
            continue
        if value.shape[0] % 3:
            raise UserError(f"DINO checkpoint tensor {key!r} of shape {value.shape} is not q|k|v")
        for name, third in zip(("query", "key", "value"), np.split(value, 3, axis=0)):
            out[f"{match.group(1)}.qkv[{name}].{match.group(2)}"] = third
    return out


def dino_vit_kwargs_from_tensors(
    tensors: Mapping[str, np.ndarray], num_heads: int | None = None
) -> dict[str, Any]:
    """DinoViT arguments inferred from original-DINO tensor shapes.

    Args:
      tensors: from `dino_backbone_tensors`.
      num_heads: attention heads; default hidden_size // 64 (all published DINO ViTs).

    Raises:
      UserError: the tensors are not a DINO ViT (key names in the message).
    """
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in needed if k not in tensors]
    if missing:
        some = sorted(tensors)[:5]
        raise UserError(
            f"not a DINO ViT state dict: no {missing[0]!r} (keys start {some}); for a Hugging "
            "Face model pass its folder instead"
        )
    hidden = int(tensors["cls_token"].shape[-1])
    proj = tensors["patch_embed.proj.weight"]  # [D, 3, p, p]
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise UserError(f"DINO patch_embed.proj.weight has shape {proj.shape}, not [D, 3, p, p]")
    patch = int(proj.shape[-1])
    positions = int(tensors["pos_embed"].shape[1]) - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise UserError(f"DINO pos_embed has {positions} patch positions, not a square grid")
    depth = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"blocks\.(\d+)\.", k)))
    mlp = int(tensors["blocks.0.mlp.fc1.weight"].shape[0])
    return dict(
        patch_size=patch,
        hidden_size=hidden,
        depth=depth,
        num_heads=num_heads or max(1, hidden // DINO_HEAD_DIM),
        mlp_ratio=mlp / hidden,
        qkv_bias="blocks.0.attn.qkv.bias" in tensors,
        layer_norm_eps=DINO_LAYER_NORM_EPS,
        pretrain_image_size=grid * patch,
    )


def read_dino_state_dict(
    path: str | Path, *, checkpoint_key: str = "teacher", **overrides
) -> tuple[dict[str, Any], dict]:
    """DinoViT arguments and variables from an original DINO checkpoint file.

    Args:
      path: a `.pth` (torch.load with weights_only=True; needs torch) or `.safetensors` file,
        e.g. `dino_deitsmall16_pretrain.pth` or a DINO training `checkpoint.pth`.
      checkpoint_key: the network to take from a training checkpoint ("teacher"/"student").
      **overrides: DinoViT arguments replacing the inferred ones, e.g. `num_heads=...`,
        `dtype=jnp.bfloat16`; a size override that does not fit the weights raises UserError.

    Returns:
      (kwargs, {"params": ...}) such that `DinoViT(**kwargs).apply(variables, images)` works.

    Raises:
      UserError: the file is missing, unreadable, or not a DINO ViT that fits the arguments.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"DINO checkpoint {path} does not exist")
    tensors = dino_backbone_tensors(read_weight_file(path), checkpoint_key)
    kwargs = {**dino_vit_kwargs_from_tensors(tensors, overrides.get("num_heads")), **overrides}
    params = dino_params_from_tensors(
        _split_dino_qkv(tensors), kwargs, dino_key, f"DINO checkpoint {path}"
    )
    return kwargs, {"params": jax.tree.map(jnp.asarray, params)}


def read_dino_vit(path: str | Path, **overrides) -> tuple[dict[str, Any], dict]:
    """`read_hf_vit` for a folder, `read_dino_state_dict` for a file."""
    path = Path(path)
    if path.is_dir():
        return read_hf_vit(path, **overrides)
    if path.is_file():
        return read_dino_state_dict(path, **overrides)
    raise UserError(
        f"no DINO weights at {path}: give a Hugging Face ViT folder (config.json + weights) "
        "or an original DINO .pth file"
    )


@registry.weight_formats.register("dino_vit")
def read_init_variables(path: str | Path, which: str = "best", *, sharding=None):
    """`config.init_from` reader: DINO ViT weights as a segmenter's `backbone/...` parameters.

    Args:
      path: a HF ViT folder or an original DINO checkpoint file.
      which: ignored (a published checkpoint holds one set of weights).
      sharding: where to put the arrays (e.g. replicated over the mesh); None keeps them.

    Returns:
      ({"params": {"backbone": dino_params}}, meta) as `checkpoint.read_variables` returns;
      meta holds step 0, the source and the inferred DinoViT arguments (`backbone_kwargs`).
    """
    del which
    kwargs, variables = read_dino_vit(path)
    return published(
        {"params": {"backbone": variables["params"]}}, path, sharding, backbone_kwargs=kwargs
    )
