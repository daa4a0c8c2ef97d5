"""`dllab_jax.models.build_model`: a config's `model` becomes the registered module."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from model_checks import abstract_init

from dllab_jax.errors import UserError
from dllab_jax.models import build_model

TINY_VIT = dict(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2)
# The image classifiers (two_tower and blip_captioner have their own tests).
CLASSIFIERS = ["cnn", "linear", "resnet18", "vit"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_registry_builds_every_classifier(name):
    extra = {
        "resnet18": {"stem": "cifar", "dropout": 0.1},
        "vit": TINY_VIT,
        "cnn": {"widths": (8,)},
    }
    config = ml_collections.ConfigDict({"name": name, **extra.get(name, {})})
    model = build_model(config, num_classes=3)
    variables = abstract_init(model, (1, 16, 16, 3))
    logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((4, 16, 16, 3))), variables)
    assert logits.shape == (4, 3)


def test_frozen_is_not_a_config_key():
    """One knob for freezing: config.optimizer.trainable (the loop sets the model's `frozen`)."""
    config = ml_collections.ConfigDict({"name": "two_tower", "frozen": ("vision_model",)})
    with pytest.raises(UserError, match=r"config\.optimizer\.trainable"):
        build_model(config)
