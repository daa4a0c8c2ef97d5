"""Checkpoint reuse in your own Flax code, without the training code.

from dllab_jax.load import load_run
model, variables, config = load_run("checkpoints/classification")
logits = model.apply(variables, images)  # images: [B, H, W, 3] float32, normalised
                                          # with config.data.mean / config.data.std
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import ml_collections

from dllab_jax import checkpoint as ckpt_lib
from dllab_jax import models


def _tuples(value):
    """JSON turns tuples into lists; linen fields want hashable tuples back."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def load_run(
    workdir: str | Path, which: str = "best"
) -> tuple[nn.Module, dict, ml_collections.ConfigDict]:
    """Loads a run's module, variables and config from its workdir.

    Args:
      workdir: a run directory written by `python main.py ... --workdir=<workdir>`.
      which: "best" (the best validation checkpoint; the latest if the run kept none) or
        "latest".

    Returns:
      (module, variables, config): `module.apply(variables, inputs)` runs the model in
      inference mode (the EMA parameters where the run kept an EMA); `config` is the run's
      ml_collections config.
    """
    arrays, meta = ckpt_lib.read_variables(
        workdir, which, items=("params", "model_state", "ema_params")
    )
    spec = meta["model"]
    module = models.model_class(spec["name"])(**_tuples(spec["kwargs"]))
    params = arrays.get("ema_params") or arrays["params"]
    variables = {"params": params, **arrays.get("model_state", {})}
    config = ml_collections.ConfigDict(meta["config"])
    return module, variables, config
