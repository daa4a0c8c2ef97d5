"""Optimisers and schedules from `config.optimizer`, with parameters frozen by regex."""

from __future__ import annotations

import re

import flax
import jax
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


def _base_optimizer(opt: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
    name = opt.name
    if name in ("adam", "adamw"):
        # torch's Adam/AdamW (amsgrad keeps the running maximum of the second moment).
        scale = (
            optax.scale_by_amsgrad(b1=opt.b1, b2=opt.b2, eps=opt.eps)
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
