"""Outputs of the PyTorch references (dllab_jax/bench/torch_models/) against the Flax models.

Where it is cheap, outputs are compared after copying random Flax weights into torch (eval
mode): CNN, U-Net, FCN-32, the segmentation heads and the whole DINO segmenter (its backbone
the other way, through dllab_jax/weights/dino.py).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict
from test_torch_models import TINY_DINO, abstract_init, flax_model
from torch import nn

from dllab_jax.bench.torch_models import build_head, build_torch_model
from dllab_jax.models.seg_heads import HEADS
from dllab_jax.weights.dino import (
    canonical_hf_state_dict,
    dino_params_from_tensors,
    hf_vit_key,
)

pytestmark = pytest.mark.slow


def random_variables(model, inputs, seed=0):
    """Random numpy variables shaped as `model.init`'s (no initialiser is compiled)."""
    rng = np.random.default_rng(seed)
    leaf = lambda path, x: (
        rng.uniform(0.5, 1.5, x.shape) if path[-1].key == "var" else rng.normal(0, 0.3, x.shape)
    ).astype(np.float32)
    return jax.tree.map_with_path(leaf, dict(abstract_init(model, inputs)))


def copy_flax_into_torch(variables, module: nn.Module, rename=lambda name: name) -> None:
    """Loads Flax variables into a torch module whose submodules carry the Flax paths.

    `rename` maps a torch module name to its Flax path ('.' separated). Every torch parameter
    and BN statistic must be set and every Flax leaf used.
    """
    params = flatten_dict(variables["params"], sep=".")
    stats = flatten_dict(variables.get("batch_stats", {}), sep=".")
    used, state = set(), {}

    def take(tree, key):
        used.add(key)
        return np.asarray(tree[key])

    for name, sub in module.named_modules():
        path = rename(name)
        prefix = f"{name}." if name else ""
        if isinstance(sub, nn.ConvTranspose2d):  # flax applies its kernel spatially flipped
            weight = take(params, f"{path}.kernel")[::-1, ::-1].transpose(2, 3, 0, 1)
        elif isinstance(sub, nn.Conv2d):
            weight = take(params, f"{path}.kernel").transpose(3, 2, 0, 1)
        elif isinstance(sub, nn.Linear):
            weight = take(params, f"{path}.kernel").T
        elif isinstance(sub, nn.BatchNorm2d | nn.LayerNorm | nn.GroupNorm):
            weight = take(params, f"{path}.scale")
        else:
            continue
        state[f"{prefix}weight"] = weight
        if sub.bias is not None:
            state[f"{prefix}bias"] = take(params, f"{path}.bias")
        if isinstance(sub, nn.BatchNorm2d):
            state[f"{prefix}running_mean"] = take(stats, f"{path}.mean")
            state[f"{prefix}running_var"] = take(stats, f"{path}.var")
    for name, _ in module.named_parameters():  # bare parameters such as cls_emb
        if name not in state:
            state[name] = take(params, rename(name))
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    assert not unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    assert used == set(params) | set(stats)


def assert_close_to_scale(ours, ref, tol=1e-4):
    """Max abs difference at most `tol` times the largest reference magnitude."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    scale = max(np.abs(ref).max(), 1e-6)
    err = np.abs(ours - ref).max() / scale
    assert err < tol, f"max error {err:.2e} of scale {scale:.3g} (tolerance {tol:.0e})"


def flax_and_torch_outputs(model, reference, images, rename=lambda name: name):
    """(Flax output NHWC, torch output as NHWC) with the same random weights, eval mode."""
    variables = random_variables(model, (jnp.asarray(images),))
    copy_flax_into_torch(variables, reference, rename)
    ours = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
    with torch.no_grad():
        ref = reference.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    return ours, ref.transpose(0, 2, 3, 1) if ref.ndim == 4 else ref


IMAGES = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)


def test_cnn_outputs_match():
    kwargs = dict(num_classes=5, widths=(4, 8))
    ours, ref = flax_and_torch_outputs(
        flax_model("cnn", kwargs), build_torch_model("cnn", **kwargs), IMAGES
    )
    assert_close_to_scale(ours, ref)


@pytest.mark.parametrize("skips", [True, False])
def test_unet_outputs_match(skips):
    kwargs = dict(num_classes=3, features=(4, 8), bottleneck=16, skip_connections=skips)
    ours, ref = flax_and_torch_outputs(
        flax_model("unet", kwargs), build_torch_model("unet", **kwargs), IMAGES
    )
    assert_close_to_scale(ours, ref)


def torchvision_to_flax_name(name: str) -> str:
    """backbone.layer1.0.downsample.0 -> backbone.layer1_0.downsample_conv (resnet.py names)."""
    name = re.sub(r"layer(\d)\.(\d)", r"layer\1_\2", name)
    return name.replace("downsample.0", "downsample_conv").replace("downsample.1", "downsample_bn")


def test_fcn32_outputs_match():
    images = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype(np.float32)
    ours, ref = flax_and_torch_outputs(
        flax_model("fcn32", dict(num_classes=3)),
        build_torch_model("fcn32", num_classes=3),
        images,
        rename=torchvision_to_flax_name,
    )
    assert_close_to_scale(ours, ref)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_head_outputs_match(head):
    features = np.random.default_rng(3).normal(size=(2, 3, 4, 12)).astype(np.float32)
    kwargs = {"num_heads": 3} if head in ("transformer", "shared_qk") else {}
    model = HEADS[head](5, **kwargs)
    reference = build_head(head, 12, 5, num_heads=3)
    ours, ref = flax_and_torch_outputs(model, reference, features)
    assert_close_to_scale(ours, ref)


@pytest.mark.parametrize("head", ["conv", "transformer"])
def test_dino_segmenter_outputs_match(head):
    """Backbone from the torch ViTModel (weights.dino's names), head from Flax."""
    kwargs = dict(num_classes=5, head=head, head_num_heads=6, backbone=TINY_DINO)
    images = np.random.default_rng(4).normal(size=(2, 32, 48, 3)).astype(np.float32)
    torch.manual_seed(0)
    reference = build_torch_model("dino_segmenter", **kwargs).eval()
    with torch.no_grad():  # large values, so a wrong position resize or layout shows
        for p in reference.backbone.parameters():
            p.normal_(0.0, 0.3)
    model = flax_model("dino_segmenter", kwargs)
    variables = random_variables(model, (jnp.asarray(images),))
    tensors = {k: v.numpy() for k, v in reference.backbone.state_dict().items()}
    variables["params"]["backbone"] = dino_params_from_tensors(
        canonical_hf_state_dict(tensors), TINY_DINO, hf_vit_key, "test ViTModel"
    )
    copy_flax_into_torch({"params": variables["params"]["head"]}, reference.head)
    ours = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
    with torch.no_grad():
        ref = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    assert_close_to_scale(ours, ref.transpose(0, 2, 3, 1))
