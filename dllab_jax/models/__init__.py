"""Pure Flax (linen) models, one family per file, no training logic.

`build_model(model_config, num_classes)` is the one place a config becomes a module:
`model_config.name` picks the class registered under that name (one decorator in the
model's own file, see `dllab_jax.registry`) and every other key of `model_config` is
passed to it as a constructor argument (so an unknown key is an error, not ignored).
Every model is called as `model.apply(variables, images, train=bool)` with
`images: [B, H, W, C] float32` (already normalised) and returns what its task expects.
A composite model takes its parts' arguments as nested sub-configs (`config.model.image` and
`config.model.text` of the BLIP models, `config.model.backbone` of the DINO segmenter).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import ml_collections

from dllab_jax import registry
from dllab_jax.errors import UserError


def model_class(name: str) -> type[nn.Module]:
    """The module class registered as `name` (`@registry.models.register(name)` in its file)."""
    return registry.models.get(name)


def build_model(model_config: ml_collections.ConfigDict, **task_kwargs) -> nn.Module:
    """Returns the linen module named by `model_config.name`.

    Args:
      model_config: `name` plus the module's constructor arguments.
      **task_kwargs: arguments the task decides (e.g. `num_classes`), not the user.
    """
    cls = model_class(model_config.name)
    kwargs = {k: v for k, v in model_config.to_dict().items() if k != "name"}
    if "frozen" in kwargs:
        # One knob: what the optimiser does not train runs frozen (dllab_jax/optim.py).
        raise UserError(
            "config.model.frozen is not a config key: set config.optimizer.trainable to the "
            "parameters that train; the model runs the other submodules frozen"
        )
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise UserError(
            f"config.model has keys {unknown} that model {model_config.name!r} does not take; "
            f"it takes {sorted(fields - set(task_kwargs))}"
        )
    return cls(**kwargs, **task_kwargs)
