"""Config specs and checks (dllab_jax/config_utils.py): unknown presets, bad numbers refused
naming the key, and the blocks the config files share."""

import ml_collections
import pytest

from dllab_jax.config_utils import (
    load_config,
    shrink_for_smoke,
    use_smoke_pretraining,
    validate_config,
)
from dllab_jax.errors import UserError


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(UserError, match="unknown preset"):
        load_config("configs/classification.py:resnet19")


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -4}, "batch_size"),
        ({"batch_size": 6}, "batch_size"),  # not divisible by the 4 devices
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"num_train_steps": 0}, "num_train_steps"),
        ({"num_train_steps": -1, "num_epochs": 0.0}, "num_epochs"),
        ({"log_every_steps": 0}, "log_every_steps"),
        ({"checkpoint.every_steps": -1}, "checkpoint.every_steps"),
        ({"checkpoint.keep": 0}, "checkpoint.keep"),
        ({"optimizer.learning_rate": -1e-3}, "optimizer.learning_rate"),
        ({"optimizer.learning_rate": float("nan")}, "optimizer.learning_rate"),
        ({"optimizer.b2": 1.0}, "optimizer.b2"),
        ({"optimizer.weight_decay": -0.1}, "optimizer.weight_decay"),
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"model.dropout": 1.5}, "model.dropout"),
        ({"data.num_train": -5}, "data.num_train"),
        ({"checkpoint.best_mode": "largest"}, "checkpoint.best_mode"),
    ],
)
def test_bad_numbers_are_refused_naming_the_key(overrides, key, smoke_config):
    config = smoke_config(**overrides)
    with pytest.raises(UserError, match=rf"^config\.{key}=.* is not valid: it must be"):
        validate_config(config, num_devices=4)


def test_shrink_for_smoke_sets_the_loop_keys_and_the_generated_splits_only():
    config = load_config("configs/classification.py")
    shrink_for_smoke(config, {"shapes": (64, 24, 24)}, batch=16, steps=6, eval_every=3)
    assert (config.data.num_train, config.data.num_val, config.data.num_test) == (64, 24, 24)
    loop = (config.batch_size, config.eval_batch_size, config.num_train_steps)
    intervals = (config.eval_every_steps, config.log_every_steps, config.checkpoint.every_steps)
    assert loop + intervals == (16, 16, 6, 3, 2, 2)
    cifar = load_config("configs/classification.py:cifar10")
    shrink_for_smoke(cifar, {"shapes": (64, 24, 24)}, batch=8, eval_batch=4, steps=2, eval_every=1)
    assert "num_train" not in cifar.data
    assert (cifar.batch_size, cifar.eval_batch_size, cifar.num_train_steps) == (8, 4, 2)


def test_smoke_pretraining_is_the_smoke_variant_of_the_make_with_run():
    config = load_config("configs/retrieval.py")
    use_smoke_pretraining(config)
    assert config.init_from.make_with == "configs/retrieval.py:pretrain,smoke"
    assert config.init_from.workdir == "checkpoints/retrieval-pretrain-smoke"
    bare = ml_collections.ConfigDict(dict(init_from=dict(make_with="configs/x.py", workdir="w")))
    use_smoke_pretraining(bare)
    assert (bare.init_from.make_with, bare.init_from.workdir) == (
        "configs/x.py:smoke",
        "checkpoints/x-smoke",
    )
    pretrain = load_config("configs/retrieval.py:pretrain")  # trains from scratch: unchanged
    use_smoke_pretraining(pretrain)
    assert (pretrain.init_from.make_with, pretrain.init_from.workdir) == ("", "")
