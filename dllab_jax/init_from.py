"""Starting a run from other weights (`config.init_from`): a dllab_jax run or a published
format, copied into the new state by parameter name, as big_vision's `load` does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
from absl import logging

from dllab_jax import parallel
from dllab_jax.checkpoint import read_variables
from dllab_jax.errors import UserError


def read_init_source(
    fmt: str, path: str | Path, which: str, *, sharding: jax.sharding.Sharding
) -> tuple[dict, dict]:
    """Reads the weights `config.init_from` names: a dllab_jax run ('dllab') or a published
    format, whose reader registers itself in `dllab_jax/weights/<module>.py` with
    `@registry.weight_formats.register(fmt)`."""
    if fmt == "dllab":
        return read_variables(path, which, items=("params", "model_state"), sharding=sharding)
    from dllab_jax import registry

    if fmt not in registry.weight_formats:
        raise UserError(
            f"unknown config.init_from.format {fmt!r}; use 'dllab' or one of "
            f"{registry.weight_formats.names()}"
        )
    return registry.weight_formats.get(fmt)(path, which, sharding=sharding)


def load_by_name(
    target,
    source,
    *,
    dont_load: Sequence[str] = (),
    target_prefix: str = "",
    source_prefix: str = "",
    what: str = "parameter",
):
    """Copies `source` leaves into `target` by '/'-joined name, as big_vision's `load`.

    Every target leaf whose name starts with `target_prefix` and matches none of the
    `dont_load` regexes (re.fullmatch) is taken from `source` at the name with `target_prefix`
    replaced by `source_prefix`; it must exist there with the same shape. Others keep their
    target value (typically a fresh initialisation).

    Returns:
      (merged tree, list of loaded names).

    Raises:
      UserError: on a missing name or a shape mismatch, naming it.
    """
    flat_target = flax.traverse_util.flatten_dict(target, sep="/")
    flat_source = flax.traverse_util.flatten_dict(source, sep="/")
    patterns = [re.compile(p) for p in dont_load]
    merged, loaded = {}, []
    for name, value in flat_target.items():
        skip = not name.startswith(target_prefix) or any(p.fullmatch(name) for p in patterns)
        if skip:
            merged[name] = value
            continue
        source_name = source_prefix + name[len(target_prefix) :]
        if source_name not in flat_source:
            near = [n for n in flat_source if n.split("/")[-1] == name.split("/")[-1]][:3]
            raise UserError(
                f"init_from: {what} {source_name!r} is not in the source checkpoint (similar: "
                f"{near}); add a config.init_from.dont_load pattern for it or fix the prefixes"
            )
        new = flat_source[source_name]
        if tuple(new.shape) != tuple(value.shape):
            raise UserError(
                f"init_from: {what} {name!r} has shape {tuple(value.shape)} here but "
                f"{tuple(new.shape)} in the source checkpoint; add a config.init_from.dont_load "
                "pattern for it or match the model sizes"
            )
        merged[name] = jnp.asarray(new, dtype=value.dtype)
        loaded.append(name)
    return flax.traverse_util.unflatten_dict(merged, sep="/"), loaded


def apply_init_from(state, config, mesh):
    """`state` (a `TrainState`) with the parameters and model state that `config.init_from`
    names loaded by name, and a fresh optimiser state for them."""
    init = config.init_from
    workdir = Path(init.workdir)
    sources, meta = read_init_source(
        init.format, workdir, init.which, sharding=parallel.replicated(mesh)
    )
    rules = dict(
        dont_load=tuple(init.dont_load),
        target_prefix=init.target_prefix,
        source_prefix=init.source_prefix,
    )
    params, loaded = load_by_name(state.params, sources["params"], **rules)
    model_state = dict(state.model_state)
    source_model_state = sources.get("model_state", {})
    for collection, target in state.model_state.items():
        if collection in source_model_state:
            model_state[collection], _ = load_by_name(
                target, source_model_state[collection], what=f"{collection} entry", **rules
            )
    total = len(jax.tree.leaves(state.params))
    logging.info(
        "init_from: loaded %d of %d parameter arrays from %s (step %s)",
        len(loaded),
        total,
        workdir,
        meta.get("step"),
    )
    print(f"init_from: loaded {len(loaded)}/{total} parameter arrays from {workdir}")
    replicated = parallel.replicated(mesh)
    params = jax.device_put(params, replicated)
    model_state = jax.device_put(model_state, replicated)
    ema_params = params if jax.tree.leaves(state.ema_params) else state.ema_params
    # A fresh optimiser state for the loaded values (moments are zero either way).
    return state.replace(
        params=params,
        model_state=model_state,
        opt_state=jax.jit(state.tx.init, out_shardings=replicated)(params),
        ema_params=ema_params,
    )
