"""ResNet-18 (dllab_jax/models/resnet.py): parameter counts, logits and BatchNorm statistics
against the torchvision-identical PyTorch reference of dllab_jax/bench/torch_models (torchvision
itself does not install beside the CPU torch wheel). Inputs are tiny and the model runs
eagerly (no jit), since compile time would dominate on CPU.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict
from model_checks import abstract_init, assert_close_to_scale, count_params, torch_resnet

from dllab_jax.bench.torch_models import TorchResNet18
from dllab_jax.errors import UserError
from dllab_jax.models.resnet import ResNet18, ResNet18Backbone
from dllab_jax.weights.torchvision_resnet18 import variables_from_torchvision_resnet18

pytestmark = pytest.mark.slow  # parity against a PyTorch reference


RESNET_IMAGES = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)


STEMS = pytest.mark.parametrize("stem", ["imagenet", "cifar"])


@pytest.mark.parametrize(
    "num_classes, stem, expected",
    [(1000, "imagenet", 11_689_512), (10, "imagenet", 11_181_642), (10, "cifar", None)],
)
def test_resnet18_param_count_matches_torchvision(num_classes, stem, expected):
    ours = count_params(abstract_init(ResNet18(num_classes, stem=stem), (1, 32, 32, 3)))
    torch_count = sum(p.numel() for p in TorchResNet18(num_classes, stem).parameters())
    assert ours == torch_count
    if expected is not None:
        assert ours == expected
    else:  # the 3x3 stem replaces 64*3*7*7 weights by 64*3*3*3
        assert ours == 11_181_642 - 64 * 3 * (49 - 9) == 11_173_962


@STEMS
def test_resnet18_eval_logits_match_torch(stem):
    model, variables = torch_resnet(stem)
    with torch.no_grad():
        ref = model(torch.from_numpy(RESNET_IMAGES.transpose(0, 3, 1, 2))).numpy()
    ours = ResNet18(10, stem=stem).apply(variables, RESNET_IMAGES)
    assert ours.dtype == jnp.float32
    assert_close_to_scale(ours, ref, 1e-4)


@STEMS
def test_resnet18_train_logits_and_running_means_match_torch(stem):
    model, variables = torch_resnet(stem)
    model = copy.deepcopy(model).train()
    with torch.no_grad():
        ref = model(torch.from_numpy(RESNET_IMAGES.transpose(0, 3, 1, 2))).numpy()
    ours, updates = ResNet18(10, stem=stem).apply(
        variables, RESNET_IMAGES, train=True, mutable=["batch_stats"]
    )
    assert_close_to_scale(ours, ref, 1e-4)
    # Momentum convention: flax 0.9 keeps what torch's 0.1 replaces. (running_var differs by
    # design: torch stores the unbiased batch variance.)
    converted = variables_from_torchvision_resnet18(
        {k: v.numpy() for k, v in model.state_dict().items()}, stem=stem
    )
    ours_stats = flatten_dict(jax.tree.map(np.asarray, updates["batch_stats"]))
    ref_stats = flatten_dict(converted["batch_stats"])
    means = [k for k in ref_stats if k[-1] == "mean"]
    assert len(means) == 20 and set(ours_stats) == set(ref_stats)
    for key in means:
        np.testing.assert_allclose(ours_stats[key], ref_stats[key], rtol=1e-4, atol=1e-5)


@STEMS
def test_resnet18_backbone_feature_map_shape(stem):
    _, variables = torch_resnet(stem)
    backbone_vars = {k: v["backbone"] for k, v in variables.items()}
    features = ResNet18Backbone(stem).apply(backbone_vars, RESNET_IMAGES)
    # 64x64 input: /32 with the imagenet stem, /8 with the cifar stem.
    assert features.shape == ((2, 2, 2, 512) if stem == "imagenet" else (2, 8, 8, 512))


def test_resnet18_dropout_only_in_train_mode():
    _, variables = torch_resnet("imagenet")
    images = RESNET_IMAGES[:, :32, :32]
    plain, dropped = ResNet18(10), ResNet18(10, dropout=0.5)
    rngs = {"dropout": jax.random.key(1)}
    np.testing.assert_array_equal(
        dropped.apply(variables, images, rngs=rngs), plain.apply(variables, images)
    )
    train = lambda m, key: m.apply(
        variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": key}
    )[0]
    a, b = train(dropped, jax.random.key(1)), train(dropped, jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, train(dropped, jax.random.key(1)))
    assert not np.allclose(a, train(plain, jax.random.key(1)))


def test_resnet18_bfloat16_compute_keeps_float32_params():
    _, variables = torch_resnet("imagenet")
    model = ResNet18(10, dtype=jnp.bfloat16)
    abstract = abstract_init(model, (1, 32, 32, 3))
    assert {x.dtype for x in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
    images = RESNET_IMAGES[:, :32, :32]
    ours = model.apply(variables, images)
    assert ours.dtype == jnp.float32
    assert_close_to_scale(ours, ResNet18(10).apply(variables, images), 0.1)


def test_unknown_stem_is_a_user_error():
    with pytest.raises(UserError, match="'resnet'"):
        abstract_init(ResNet18(10, stem="resnet"), (1, 32, 32, 3))
    with pytest.raises(UserError, match="'resnet'"):
        variables_from_torchvision_resnet18({}, stem="resnet")
