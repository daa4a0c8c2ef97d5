"""Optimisers and schedules (dllab_jax/optim.py) on hand-made problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dllab_jax import optim
from dllab_jax.config_utils import base_config
from dllab_jax.errors import UserError


def _opt(**overrides):
    """The loop's optimiser config (base_config's keys) with the values these cases pin."""
    opt = base_config().optimizer
    pinned = dict(learning_rate=0.1, schedule="exponential", decay_rate=0.9, weight_decay=0.01)
    opt.update(dict(name="adamw", amsgrad=True, warmup_steps=0, trainable=".*", **pinned))
    opt.update(overrides)
    return opt


@pytest.mark.slow
def test_adamw_amsgrad_with_epoch_decay_matches_torch():
    torch = pytest.importorskip("torch")
    w0 = np.array([1.0, -2.0, 3.0], np.float32)
    target = np.array([0.5, 0.5, -1.0], np.float32)
    steps_per_epoch, steps = 2, 7

    w = torch.tensor(w0, requires_grad=True)
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.01, amsgrad=True)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    for step in range(steps):
        opt.zero_grad()
        (((w - torch.tensor(target)) ** 2) * torch.arange(1, 4)).sum().backward()
        opt.step()
        if (step + 1) % steps_per_epoch == 0:
            sched.step()

    tx, schedule = optim.make_optimizer(
        _opt(), {"w": w0}, steps_per_epoch=steps_per_epoch, total_steps=steps
    )
    params = {"w": jnp.asarray(w0)}
    state = tx.init(params)
    grad_fn = jax.grad(lambda p: (((p["w"] - target) ** 2) * jnp.arange(1, 4)).sum())
    for _ in range(steps):
        updates, state = tx.update(grad_fn(params), state, params)
        params = jax.tree.map(jnp.add, params, updates)
    np.testing.assert_allclose(params["w"], w.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert float(schedule(5)) == pytest.approx(0.1 * 0.9**2)


def test_frozen_parameters_get_no_update_and_no_optimizer_state():
    params = {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2)}}
    tx, _ = optim.make_optimizer(
        _opt(trainable="head/.*"), params, steps_per_epoch=1, total_steps=1
    )
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    np.testing.assert_array_equal(updates["backbone"]["w"], 0.0)
    assert np.all(np.asarray(updates["head"]["w"]) != 0.0)
    # Moments (and the amsgrad maximum) exist for the 2 head values only.
    sizes = sum(x.size for x in jax.tree.leaves(state) if x.ndim > 0)
    assert sizes == 3 * 2


def test_trainable_regex_that_matches_nothing_is_an_error():
    with pytest.raises(UserError, match="matches no parameter"):
        optim.make_optimizer(
            _opt(trainable="decoder/.*"), {"w": jnp.ones(1)}, steps_per_epoch=1, total_steps=1
        )


def test_linear_schedule_decays_per_epoch_to_zero():
    _, schedule = optim.make_optimizer(
        _opt(schedule="linear", learning_rate=1.0),
        {"w": jnp.ones(1)},
        steps_per_epoch=10,
        total_steps=40,
    )
    assert [float(schedule(s)) for s in (0, 9, 10, 35)] == pytest.approx([1, 1, 0.75, 0.25])


def test_frozen_submodules_are_the_ones_trainable_leaves_untrained():
    params = {
        "vision_model": {"a": jnp.ones(2), "b": jnp.ones(1)},
        "text_encoder": {"a": jnp.ones(2)},
        "vision_proj": {"kernel": jnp.ones((2, 2))},
        "text_proj": {"kernel": jnp.ones((2, 2))},
    }
    projections = "(vision_proj|text_proj)/.*"
    assert optim.frozen_submodules(params, projections) == ("text_encoder", "vision_model")
    assert optim.frozen_submodules(params, "vision_model/a") == (
        "text_encoder",
        "text_proj",
        "vision_proj",
    )  # a submodule with one trained parameter is not frozen
    assert optim.frozen_submodules(params, ".*") == optim.frozen_submodules(params, "") == ()


def test_with_frozen_submodules_sets_the_models_field_only():
    from dllab_jax.models.cnn import CNN
    from dllab_jax.models.two_tower import TwoTower

    params = {"vision_model": {"w": jnp.ones(1)}, "vision_proj": {"w": jnp.ones(1)}}
    model = optim.with_frozen_submodules(TwoTower(), params, "vision_proj/.*")
    assert model.frozen == ("vision_model",)
    assert optim.with_frozen_submodules(model, params, ".*").frozen == ()
    cnn = CNN(3)  # nothing it could skip: returned as it is
    assert optim.with_frozen_submodules(cnn, {"head": {"w": jnp.ones(1)}}, "x.*|head/.*") is cnn
