"""Optimisers and schedules from `config.optimizer`, with parameters frozen by regex.

`config.optimizer.trainable` is the one knob for freezing (as big_vision's optax masks):
parameters it does not match get no updates and no optimiser state, and a model that can
run a tower frozen (a `frozen` field: TwoTower, BlipCaptioner, the DINO segmenter) is told
which of its submodules that leaves untrained (`with_frozen_submodules`), so it runs them in
inference mode behind `stop_gradient`. No model flag has to agree with the regex.
"""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dllab_jax.errors import UserError


def make_schedule(opt: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int):
    """Learning rate as a function of the step.

    `opt.schedule`:
      constant: `opt.learning_rate` throughout.
      exponential: multiplied by `opt.decay_rate` once per epoch (torch ExponentialLR stepped
        each epoch).
      linear: from `opt.learning_rate` to 0 over the run, stepped each epoch (the handout's
        LinearLR / LambdaLR per epoch).
      cosine: cosine decay to 0 over the run, per step.
    `opt.warmup_steps` > 0 prepends a linear warm-up from 0.
    """
    lr = opt.learning_rate
    name = opt.schedule
    if name == "constant":
        schedule = optax.constant_schedule(lr)
    elif name == "exponential":
        schedule = optax.exponential_decay(
            lr, transition_steps=steps_per_epoch, decay_rate=opt.decay_rate, staircase=True
        )
    elif name == "linear":
        num_epochs = max(1, -(-total_steps // steps_per_epoch))

        def schedule(step):
            epoch = step // steps_per_epoch
            return lr * jax.numpy.maximum(0.0, 1.0 - epoch / num_epochs)

    elif name == "cosine":
        schedule = optax.cosine_decay_schedule(lr, decay_steps=max(1, total_steps))
    else:
        raise UserError(
            f"unknown config.optimizer.schedule {name!r}; use constant, exponential, linear "
            "or cosine"
        )
    if opt.warmup_steps > 0:
        warmup = optax.linear_schedule(0.0, lr, opt.warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [opt.warmup_steps])
    return schedule


class AmsgradState(NamedTuple):
    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates


def scale_by_amsgrad_torch(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """AMSGrad as torch's Adam/AdamW(amsgrad=True) computes it.

    torch keeps the running maximum of the *raw* second moment and bias-corrects that maximum
    with the current step; `optax.scale_by_amsgrad` takes the maximum of the bias-corrected
    moment instead, which gives different updates in the first steps.
    """

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)
        return AmsgradState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros())

    def update(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
        count = optax.safe_increment(state.count)
        correction1 = 1 - b1 ** count.astype(jnp.float32)
        correction2 = 1 - b2 ** count.astype(jnp.float32)
        new_updates = jax.tree.map(
            lambda m, v: (m / correction1) / (jnp.sqrt(v / correction2) + eps), mu, nu_max
        )
        return new_updates, AmsgradState(count, mu, nu, nu_max)

    return optax.GradientTransformation(init, update)


def _base_optimizer(opt: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
    name = opt.name
    if name in ("adam", "adamw"):
        # torch's Adam/AdamW (amsgrad keeps the running maximum of the second moment).
        scale = (
            scale_by_amsgrad_torch(b1=opt.b1, b2=opt.b2, eps=opt.eps)
            if opt.amsgrad
            else optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps)
        )
        parts = [scale]
        if opt.weight_decay:
            if name == "adam":
                # torch Adam's weight_decay is L2 added to the gradient, before the moments.
                parts.insert(0, optax.add_decayed_weights(opt.weight_decay))
            else:
                parts.append(optax.add_decayed_weights(opt.weight_decay))
        parts.append(optax.scale_by_learning_rate(schedule))
        return optax.chain(*parts)
    if name == "sgd":
        parts = []
        if opt.weight_decay:
            parts.append(optax.add_decayed_weights(opt.weight_decay))
        parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
        return optax.chain(*parts)
    raise UserError(f"unknown config.optimizer.name {name!r}; use adam, adamw or sgd")


def trainable_mask(params, pattern: str):
    """True for parameters whose '/'-joined path matches `pattern` (re.fullmatch)."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise UserError(f"config.optimizer.trainable={pattern!r} is not a regex: {error}") from None
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    mask = {path: bool(regex.fullmatch(path)) for path in flat}
    if not any(mask.values()):
        raise UserError(
            f"config.optimizer.trainable={pattern!r} matches no parameter; names look like "
            f"{sorted(flat)[:3]}"
        )
    return flax.traverse_util.unflatten_dict(mask, sep="/")


def frozen_submodules(params, pattern: str) -> tuple[str, ...]:
    """The top-level submodules (first names of the parameter paths) of which `pattern`
    trains no parameter, sorted; () when everything trains."""
    if pattern in ("", ".*"):
        return ()
    mask = trainable_mask(params, pattern)
    return tuple(sorted(name for name, sub in mask.items() if not any(jax.tree.leaves(sub))))


def with_frozen_submodules(model, params, pattern: str):
    """`model` with its `frozen` field set to `frozen_submodules(params, pattern)`; a model
    without that field (nothing it could skip) is returned as it is.

    Args:
      model: an unbound linen module.
      params: its parameter tree (arrays or shapes).
      pattern: `config.optimizer.trainable`.
    """
    if "frozen" not in {f.name for f in dataclasses.fields(model)}:
        return model
    return model.clone(frozen=frozen_submodules(params, pattern))


def make_optimizer(
    opt: ml_collections.ConfigDict, params, *, steps_per_epoch: int, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns (optimizer, learning-rate schedule).

    Parameters outside `opt.trainable` get zero updates from `optax.set_to_zero`, which keeps
    no optimiser state, so frozen parameters stay bit-identical and cost no memory for
    moments.
    """
    schedule = make_schedule(opt, steps_per_epoch, total_steps)
    tx = _base_optimizer(opt, schedule)
    if opt.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    if opt.trainable not in ("", ".*"):
        mask = trainable_mask(params, opt.trainable)
        labels = jax.tree.map(lambda train: "train" if train else "frozen", mask)
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule
