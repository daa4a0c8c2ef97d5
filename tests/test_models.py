"""Model tests: exact parameter counts, and logits against PyTorch references.

The references are plain torch, from dllab_jax/bench/torch_models.py: a torchvision-identical
ResNet-18 (torchvision itself does not install beside the CPU torch wheel) and the UvA
tutorial 11 ViT. Inputs are tiny and models run eagerly (no jit), since compile time would
dominate on CPU.
"""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict
from torch import nn as tnn

from dllab_jax.bench.torch_models import TorchResNet18, TorchVisionTransformer
from dllab_jax.errors import UserError
from dllab_jax.models import build_model
from dllab_jax.models.cnn import CNN, LinearClassifier
from dllab_jax.models.resnet import (
    ResNet18,
    ResNet18Backbone,
    variables_from_torchvision_resnet18,
)
from dllab_jax.models.vit import ViT, ViTEncoder, patchify


def count_params(variables) -> int:
    """Counts `params` leaves only (BatchNorm running stats are buffers in torch)."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def abstract_init(model, image_shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(image_shape)))


def random_variables(model, image_shape, seed=0):
    """Random numpy variables shaped as `model.init`'s, without compiling its initialisers.

    (Eager initialisers compile once per parameter shape, about 0.8 s each on this CPU.)
    """
    rng = np.random.default_rng(seed)
    leaf = lambda path, x: (
        rng.uniform(0.5, 1.5, x.shape) if path[-1].key == "var" else rng.normal(0, 0.2, x.shape)
    ).astype(np.float32)
    return jax.tree.map_with_path(leaf, dict(abstract_init(model, image_shape)))


def assert_close_to_scale(ours, ref, tol):
    """Max abs difference at most `tol` times the largest reference magnitude."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    scale = max(np.abs(ref).max(), 1e-6)
    err = np.abs(ours - ref).max() / scale
    assert err < tol, f"max error {err:.2e} of scale {scale:.3g} (tolerance {tol:.0e})"


# ----------------------------------------------------------------------------------------
# PyTorch reference weights (dllab_jax/bench/torch_models.py) as our variables.


def variables_from_uva_torch_vit(state_dict, num_layers, num_heads, patch_size) -> dict:
    """Maps the UvA PyTorch ViT's state dict onto our `ViT` parameter names."""
    sd = {k: v.detach().numpy() for k, v in state_dict.items()}
    d = sd["cls_token"].shape[-1]
    p = patch_size
    w = sd["input_layer.weight"]  # [D, C*p*p], columns in (C, ph, pw) order
    c = w.shape[1] // (p * p)
    patch_kernel = w.reshape(d, c, p, p).transpose(2, 3, 1, 0).reshape(p * p * c, d)
    encoder = {
        "patch_embed": {"kernel": patch_kernel, "bias": sd["input_layer.bias"]},
        "cls_token": sd["cls_token"],
        "pos_embedding": sd["pos_embedding"],
    }

    def dense(prefix):
        return {"kernel": sd[f"{prefix}.weight"].T, "bias": sd[f"{prefix}.bias"]}

    def norm(prefix):
        return {"scale": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}

    h = num_heads
    for i in range(num_layers):
        t = f"transformer.{i}"
        qkv_w = np.split(sd[f"{t}.attn.in_proj_weight"], 3)  # 3 x [D_out, D_in]
        qkv_b = np.split(sd[f"{t}.attn.in_proj_bias"], 3)
        attn = {
            name: {"kernel": wi.T.reshape(d, h, d // h), "bias": bi.reshape(h, d // h)}
            for name, wi, bi in zip(("query", "key", "value"), qkv_w, qkv_b)
        }
        attn["out"] = {
            "kernel": sd[f"{t}.attn.out_proj.weight"].T.reshape(h, d // h, d),
            "bias": sd[f"{t}.attn.out_proj.bias"],
        }
        encoder[f"block{i}"] = {
            "norm1": norm(f"{t}.layer_norm_1"),
            "attn": attn,
            "norm2": norm(f"{t}.layer_norm_2"),
            "mlp_in": dense(f"{t}.linear.0"),
            "mlp_out": dense(f"{t}.linear.3"),
        }
    return {
        "params": {
            "encoder": encoder,
            "head_norm": norm("mlp_head.0"),
            "head": dense("mlp_head.1"),
        }
    }


def randomise_(module: tnn.Module, seed: int) -> None:
    """Perturbs every 1-D tensor (biases, norm affine, BN running stats) so none is trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype != torch.float32 or t.ndim != 1:
                continue
            noise = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("weight"):  # norm scales: around 1
                t.copy_(1.0 + 0.2 * noise)
            else:
                t.copy_(0.1 * noise)


# ----------------------------------------------------------------------------------------
# ResNet-18.

RESNET_IMAGES = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)


@functools.cache
def torch_resnet(stem):
    """(torch model in eval mode with random BN, our variables converted from it), built once."""
    torch.manual_seed(0)
    model = TorchResNet18(10, stem).eval()
    randomise_(model, seed=1)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, variables_from_torchvision_resnet18(state, stem=stem)


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
def test_resnet18_converted_tree_matches_init(stem):
    _, variables = torch_resnet(stem)
    expected = abstract_init(ResNet18(10, stem=stem), (1, 32, 32, 3))
    shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
    assert shapes(variables) == shapes(dict(expected))


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


def test_converter_rejects_missing_key_wrong_shape_and_extra_key():
    model, _ = torch_resnet("imagenet")
    state = {k: v.numpy() for k, v in model.state_dict().items()}

    missing = dict(state)
    del missing["layer3.1.bn2.running_var"]
    with pytest.raises(UserError, match=r"layer3\.1\.bn2\.running_var") as err:
        variables_from_torchvision_resnet18(missing)
    assert "\n" not in str(err.value)

    wrong = dict(state)
    wrong["layer2.0.downsample.0.weight"] = np.zeros((128, 64, 3, 3), np.float32)
    with pytest.raises(UserError, match=r"layer2\.0\.downsample\.0\.weight.*\(128, 64, 3, 3\)"):
        variables_from_torchvision_resnet18(wrong)

    with pytest.raises(UserError, match=r"conv1\.weight"):  # 7x7 weights, cifar stem expected
        variables_from_torchvision_resnet18(state, stem="cifar")

    with pytest.raises(UserError, match=r"fc\.weight"):
        variables_from_torchvision_resnet18({k: v for k, v in state.items() if k != "fc.weight"})

    extra = {**state, "layer5.0.conv1.weight": np.zeros((1,), np.float32)}
    with pytest.raises(UserError, match=r"layer5\.0\.conv1\.weight"):
        variables_from_torchvision_resnet18(extra)


def test_unknown_stem_is_a_user_error():
    with pytest.raises(UserError, match="'resnet'"):
        abstract_init(ResNet18(10, stem="resnet"), (1, 32, 32, 3))
    with pytest.raises(UserError, match="'resnet'"):
        variables_from_torchvision_resnet18({}, stem="resnet")


# ----------------------------------------------------------------------------------------
# ViT.

UVA = dict(embed_dim=256, hidden_dim=512, num_heads=8, num_layers=6, patch_size=4)
VIT_IMAGES = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def vit_case():
    """(UvA torch ViT in eval mode, our variables copied from it), CIFAR-10 settings."""
    torch.manual_seed(0)
    model = TorchVisionTransformer(
        num_channels=3, num_classes=10, num_patches=64, dropout=0.2, **UVA
    ).eval()
    randomise_(model, seed=2)
    variables = variables_from_uva_torch_vit(
        model.state_dict(), UVA["num_layers"], UVA["num_heads"], UVA["patch_size"]
    )
    return model, variables


def test_vit_param_count_matches_uva_pytorch(vit_case):
    model, variables = vit_case
    ours = abstract_init(ViT(10), (1, 32, 32, 3))
    assert count_params(ours) == sum(p.numel() for p in model.parameters()) == 3_195_146
    shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
    assert shapes(variables) == shapes(dict(ours))


def test_patchify_order():
    images = np.arange(2 * 8 * 4 * 3, dtype=np.float32).reshape(2, 8, 4, 3)
    patches = np.asarray(patchify(jnp.asarray(images), 2))
    assert patches.shape == (2, 8, 12)
    # Patch 3 is grid row 1, column 1: pixels (2:4, 2:4), flattened (ph, pw, C).
    np.testing.assert_array_equal(patches[1, 3], images[1, 2:4, 2:4].reshape(-1))


def test_vit_eval_logits_match_uva_pytorch(vit_case):
    model, variables = vit_case
    with torch.no_grad():
        ref = model(torch.from_numpy(VIT_IMAGES.transpose(0, 3, 1, 2))).numpy()
    ours = ViT(10).apply(variables, VIT_IMAGES, rngs={"dropout": jax.random.key(0)})
    assert ours.dtype == jnp.float32
    # Errors measured here are below 1e-6; tanh-approximate GELU instead of erf gives 1.3e-4.
    assert_close_to_scale(ours, ref, 2e-5)


def test_vit_encoder_returns_all_tokens(vit_case):
    _, variables = vit_case
    tokens = ViTEncoder().apply({"params": variables["params"]["encoder"]}, VIT_IMAGES)
    assert tokens.shape == (2, 1 + 64, 256)


TINY_VIT = dict(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2)


def test_vit_dropout_only_in_train_mode():
    images = VIT_IMAGES[:, :16, :16]
    model = ViT(10, dropout=0.5, **TINY_VIT)
    variables = random_variables(model, images.shape)
    rngs = lambda seed: {"dropout": jax.random.key(seed)}
    evaluated = model.apply(variables, images)
    np.testing.assert_array_equal(model.apply(variables, images, rngs=rngs(1)), evaluated)
    np.testing.assert_array_equal(
        ViT(10, dropout=0.0, **TINY_VIT).apply(variables, images, train=True), evaluated
    )
    a = model.apply(variables, images, train=True, rngs=rngs(1))
    assert not np.allclose(a, model.apply(variables, images, train=True, rngs=rngs(2)))
    assert not np.allclose(a, evaluated)


def test_vit_bfloat16_compute_keeps_float32_params():
    images = VIT_IMAGES[:, :16, :16]
    variables = random_variables(ViT(10, **TINY_VIT), images.shape)
    model = ViT(10, dtype=jnp.bfloat16, **TINY_VIT)
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    ours = model.apply(variables, images)
    assert ours.dtype == jnp.float32
    assert_close_to_scale(ours, ViT(10, **TINY_VIT).apply(variables, images), 0.1)


# ----------------------------------------------------------------------------------------
# Small models and the registry.


def cnn_param_formula(in_channels, widths, num_classes):
    """Two bias-free 3x3 convs and two BatchNorms (scale, bias) per block, then the head."""
    total, cin = 0, in_channels
    for w in widths:
        total += 9 * cin * w + 9 * w * w + 2 * (2 * w)
        cin = w
    return total + cin * num_classes + num_classes


@pytest.mark.parametrize(
    "image_shape, widths, num_classes",
    [((2, 32, 32, 3), (32, 64, 128), 10), ((2, 16, 12, 1), (8, 16), 5)],
)
def test_cnn_param_count_and_output_shape(image_shape, widths, num_classes):
    model = CNN(num_classes, widths=widths, dropout=0.3)
    variables = random_variables(model, image_shape)
    assert count_params(variables) == cnn_param_formula(image_shape[-1], widths, num_classes)
    logits, _ = model.apply(
        variables,
        jnp.ones(image_shape),
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(1)},
    )
    assert logits.shape == (image_shape[0], num_classes)


def test_cnn_default_param_count():
    assert count_params(abstract_init(CNN(10), (1, 32, 32, 3))) == 288_746


def test_cnn_dropout_only_in_train_mode():
    images = jnp.asarray(VIT_IMAGES[:, :8, :8])
    model = CNN(10, widths=(8,), dropout=0.5)
    variables = random_variables(model, images.shape)
    np.testing.assert_array_equal(
        model.apply(variables, images, rngs={"dropout": jax.random.key(1)}),
        CNN(10, widths=(8,)).apply(variables, images),
    )
    train = lambda seed: model.apply(
        variables,
        images,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(seed)},
    )[0]
    assert not np.allclose(train(1), train(2))


def test_linear_classifier_param_count_and_logits():
    images = jnp.asarray(VIT_IMAGES[:, :8, :6])
    model = LinearClassifier(7)
    variables = random_variables(model, images.shape)
    assert count_params(variables) == 8 * 6 * 3 * 7 + 7
    assert count_params(abstract_init(LinearClassifier(10), (1, 32, 32, 3))) == 30_730
    head = variables["params"]["head"]
    expected = images.reshape(2, -1) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(model.apply(variables, images), expected, rtol=1e-5, atol=1e-5)


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
