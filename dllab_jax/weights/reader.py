"""The one reader of published weight files: torch pickles, safetensors, Hugging Face folders.

A HF model folder holds `config.json` and `model.safetensors`, sharded safetensors with
`model.safetensors.index.json`, or `pytorch_model.bin`. A single file is `.safetensors`
(read with `safetensors.numpy`, no torch) or a torch pickle (`.pth`, `.bin`; needs torch,
read with `weights_only=True`). Arrays come back as float32 numpy in torch's layout;
`convert.py` renames and transposes them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dllab_jax.errors import UserError

_SAFETENSORS = "model.safetensors"
_SAFETENSORS_INDEX = "model.safetensors.index.json"
_TORCH_BIN = "pytorch_model.bin"


def model_folder(folder: str | Path, what: str) -> Path:
    """`folder` as a Path; UserError if it is not a directory."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{what} folder {folder} does not exist")
    return folder


def read_hf_config(folder: str | Path, model: str = "BLIP") -> dict:
    """The folder's `config.json` as a dict (UserError if the folder or file is missing)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UserError(f"no Hugging Face config at {path}; point to a local {model} model folder")
    return json.loads(path.read_text())


def with_hf_defaults(config: dict | None, config_class: str) -> dict:
    """`config` (a config.json section) over the defaults of transformers' `config_class`
    (e.g. "BlipVisionConfig"): a config.json omits the keys at their defaults, and the
    installed transformers knows them, so no table here copies them."""
    import transformers  # a second or two to import; only when weights are read

    return {**getattr(transformers, config_class)().to_dict(), **(config or {})}


def read_hf_state_dict(folder: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a local HF model folder as float32 numpy arrays (torch only for `.bin`)."""
    folder = Path(folder)
    index = folder / _SAFETENSORS_INDEX
    if (folder / _SAFETENSORS).is_file() or index.is_file():
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            shards = [_SAFETENSORS]
        state_dict = {}
        for shard in shards:
            state_dict.update(read_safetensors(folder / shard))
        return state_dict
    if (folder / _TORCH_BIN).is_file():
        return numpy_tensors(read_torch_file(folder / _TORCH_BIN))
    raise UserError(
        f"no weights in {folder}: expected {_SAFETENSORS}, {_SAFETENSORS_INDEX} or {_TORCH_BIN}"
    )


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """A `.safetensors` file's tensors (needs no torch)."""
    from safetensors.numpy import load_file

    return dict(load_file(path))


def read_torch_file(path: str | Path) -> Mapping[str, Any]:
    """A torch pickle of tensors (`torch.save(state_dict)`), as saved; needs torch.

    Read with `weights_only=True`; DINO's training checkpoints also pickle their argparse
    `args`, which is the one other class allowed.

    Raises:
      UserError: torch is missing, the file does not unpickle, or it holds no dict.
    """
    try:
        import torch
    except ImportError:
        raise UserError(
            f"reading {path} needs torch: pip install 'dllab_jax[convert]' (CPU is enough), or "
            "convert the file to .safetensors"
        ) from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with more than tensors, or not a torch file at all
        raise UserError(
            f"cannot read {path} as a torch state dict: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(state, Mapping):
        raise UserError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def read_weight_file(path: str | Path) -> Mapping[str, Any]:
    """A single weight file: `.safetensors` as numpy, anything else as a torch pickle."""
    if Path(path).suffix == ".safetensors":
        return read_safetensors(path)
    return read_torch_file(path)


def numpy_tensors(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The tensors of a flat state dict as float32 numpy arrays; other entries are dropped."""
    out = {}
    for key, value in state.items():
        if not hasattr(value, "shape"):
            continue  # epoch counters, optimizer args and the like
        if hasattr(value, "detach"):
            value = value.detach().float().cpu().numpy()
        out[key] = np.asarray(value, np.float32)
    return out


def published(items: dict, source: str | Path, sharding=None, **meta) -> tuple[dict, dict]:
    """A format reader's result: `items` placed with `sharding` (None keeps them) and the meta
    of a published checkpoint (step 0, the source, and `meta`)."""
    if sharding is not None:
        items = jax.device_put(items, sharding)
    return items, {"step": 0, "source": str(source), **meta}
