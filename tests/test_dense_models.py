"""Dense-prediction models (SPEC E2, E3): FCN-32, U-Net, SegFormer.

Parameter counts from `jax.eval_shape` (no compute) against hand formulas and HF transformers'
`SegformerForSemanticSegmentation`; SegFormer logits against HF's after copying its weights;
FCN-32's transposed conv against the numpy bilinear kernel.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict, unflatten_dict

from dllab_jax.models.fcn import FCN32, bilinear_kernel, upsample_x32
from dllab_jax.models.resnet import ResNet18
from dllab_jax.models.segformer import SegFormer
from dllab_jax.models.unet import UNet

HANDOUT_PATCHES = dict(patch_sizes=(5, 3, 3, 3), strides=(2, 2, 2, 2))
PAPER_PATCHES = dict(patch_sizes=(7, 3, 3, 3), strides=(4, 2, 2, 2))


def count_params(variables) -> int:
    """Counts `params` leaves only (BatchNorm running stats are buffers in torch)."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def abstract_init(model, image_shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(image_shape)))


def output_shape(model, image_shape):
    variables = abstract_init(model, image_shape)
    return jax.eval_shape(lambda v: model.apply(v, jnp.zeros(image_shape)), variables).shape


# ---------------------------------------------------------------------------------------- FCN


@pytest.mark.parametrize("size", [64, 96])
def test_fcn32_output_size_equals_input_size(size):
    assert output_shape(FCN32(num_classes=13), (2, size, size, 3)) == (2, size, size, 13)


def test_fcn32_param_count():
    variables = abstract_init(FCN32(num_classes=13), (1, 64, 64, 3))
    resnet18_trunk = 11_689_512 - (512 * 1000 + 1000)  # torchvision resnet18 minus its fc
    heads = (512 * 512 + 512) + (512 * 13 + 13)
    upsample = 64 * 64 * 13 * 13
    assert count_params(variables) == resnet18_trunk + heads + upsample
    # A ResNet18 checkpoint's backbone/... parameters and statistics load by name.
    resnet = abstract_init(ResNet18(num_classes=10), (1, 64, 64, 3))
    for collection in ("params", "batch_stats"):
        shapes = jax.tree.map(
            lambda x: x.shape, (variables[collection]["backbone"], resnet[collection]["backbone"])
        )
        assert shapes[0] == shapes[1]


def test_fcn32_upsample_is_bilinear():
    variables = abstract_init(FCN32(num_classes=3), (1, 64, 64, 3))
    assert variables["params"]["upsample"]["kernel"].shape == (64, 64, 3, 3)
    params = FCN32(num_classes=3).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    kernel = np.asarray(params["upsample"]["kernel"])
    np.testing.assert_array_equal(kernel, bilinear_kernel(64, 3))
    # The 1D factor is 1 - |i - 31.5| / 32: 1/64 at the ends, 63/64 in the middle.
    np.testing.assert_allclose(
        kernel[[0, 31, 32, 63], 31, 0, 0], np.array([1, 63, 63, 1]) / 64**2 * 63
    )
    assert np.all(kernel[:, :, 0, 1] == 0)  # no mixing between classes

    # A constant map upsamples to the same constant away from the 16-pixel border, and each
    # class stays in its own channel.
    x = jnp.ones((1, 3, 3, 3)) * jnp.array([1.0, -2.0, 5.0])
    y = upsample_x32(3).apply({"params": params["upsample"]}, x)
    assert y.shape == (1, 96, 96, 3)
    np.testing.assert_allclose(
        y[0, 16:80, 16:80], np.broadcast_to([1.0, -2.0, 5.0], (64, 64, 3)), rtol=1e-5
    )


# --------------------------------------------------------------------------------------- U-Net


def unet_param_count(in_ch, num_classes, features, bottleneck, skips):
    def double_conv(c_in, c_out):  # two bias-free 3x3 convs, two BatchNorms (scale, bias)
        return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out

    total, c = 0, in_ch
    for f in features:
        total += double_conv(c, f)
        c = f
    total += double_conv(c, bottleneck)
    c = bottleneck
    for f in reversed(features):
        total += 4 * c * f + f  # 2x2 transposed conv with bias
        total += double_conv(2 * f if skips else f, f)
        c = f
    return total + features[0] * num_classes + num_classes


@pytest.mark.parametrize("skips", [True, False])
def test_unet_param_count_and_shape(skips):
    model = UNet(num_classes=13, skip_connections=skips)
    variables = abstract_init(model, (1, 64, 64, 3))
    assert count_params(variables) == unet_param_count(3, 13, (64, 128, 256, 512), 1024, skips)
    assert output_shape(model, (2, 64, 96, 3)) == (2, 64, 96, 13)


def test_unet_classic_param_count_value():
    # The classic U-Net (1 -> 2 classes, padded convs, BN, bias-free convs): 31,036,546 params.
    variables = abstract_init(UNet(num_classes=2), (1, 32, 32, 1))
    assert count_params(variables) == unet_param_count(1, 2, (64, 128, 256, 512), 1024, True)
    assert count_params(variables) == 31_036_546


def test_unet_small_colourisation_shape():
    model = UNet(num_classes=3, features=(8, 16), bottleneck=32, skip_connections=False)
    assert output_shape(model, (2, 32, 32, 1)) == (2, 32, 32, 3)
    variables = abstract_init(model, (1, 32, 32, 1))
    assert count_params(variables) == unet_param_count(1, 3, (8, 16), 32, False)


# ----------------------------------------------------------------------------------- SegFormer


def hf_segformer(num_labels, patches):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(
        num_labels=num_labels,
        patch_sizes=list(patches["patch_sizes"]),
        strides=list(patches["strides"]),
    )
    torch.manual_seed(0)
    return SegformerForSemanticSegmentation(config).eval()


@pytest.mark.parametrize("patches", [HANDOUT_PATCHES, PAPER_PATCHES], ids=["handout", "paper"])
def test_segformer_param_count_matches_hf(patches):
    hf = hf_segformer(3, patches)
    expected = sum(p.numel() for p in hf.parameters())
    variables = abstract_init(SegFormer(num_classes=3, **patches), (1, 64, 64, 3))
    assert count_params(variables) == expected
    encoder_expected = sum(p.numel() for p in hf.segformer.parameters())
    assert count_params({"params": variables["params"]["encoder"]}) == encoder_expected
    assert set(variables["params"]) == {"encoder", "decode_head"}


@pytest.mark.parametrize(
    "patches, expected",
    [(HANDOUT_PATCHES, 3_712_611), (PAPER_PATCHES, 3_714_915)],
    ids=["handout", "paper"],
)
def test_segformer_param_count_value(patches, expected):
    # MiT-b0 + head at 3 classes; the 5x5 first patch embedding has 3 * 32 * (49 - 25) fewer.
    variables = abstract_init(SegFormer(num_classes=3, **patches), (1, 64, 64, 3))
    assert count_params(variables) == expected


@pytest.mark.parametrize("patches", [HANDOUT_PATCHES, PAPER_PATCHES], ids=["handout", "paper"])
def test_segformer_output_shape(patches):
    assert output_shape(SegFormer(num_classes=3, **patches), (2, 64, 64, 3)) == (2, 64, 64, 3)


def variables_from_hf(state_dict) -> dict:
    """HF SegformerForSemanticSegmentation state dict -> variables of our `SegFormer`."""
    prefixes = [  # (regex on HF's name, our path as a function of the 0-based index)
        (
            r"segformer\.stages\.(\d+)\.blocks\.(\d+)\.",
            lambda m: f"encoder/block{int(m[1]) + 1}_{m[2]}/",
        ),
        (
            r"segformer\.stages\.(\d+)\.patch_embeddings\.",
            lambda m: f"encoder/patch_embed{int(m[1]) + 1}/",
        ),
        (r"segformer\.stages\.(\d+)\.layer_norm\.", lambda m: f"encoder/norm{int(m[1]) + 1}/"),
        (
            r"decode_head\.linear_projections\.(\d+)\.proj\.",
            lambda m: f"decode_head/linear_c{int(m[1]) + 1}/",
        ),
        (r"decode_head\.", lambda m: "decode_head/"),
    ]
    renames = {
        "layer_norm": "norm",
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.sequence_reduction.sequence_reduction": "attn/sr",
        "attention.sequence_reduction.layer_norm": "attn/sr_norm",
        "attention.q_proj": "attn/query",
        "attention.k_proj": "attn/key",
        "attention.v_proj": "attn/value",
        "attention.o_proj": "attn/out",
        "mlp.dwconv.dwconv": "mlp/dwconv",
        "batch_norm": "bn",
    }
    params, stats = {}, {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        value = value.detach().numpy()
        for pattern, repl in prefixes:
            key, n = re.subn("^" + pattern, repl, key)
            if n:
                break
        module, leaf = re.fullmatch(r"(.*)[./]([^./]+)", key).groups()
        head, _, tail = module.rpartition("/")
        path = f"{head}/{renames.get(tail, tail)}".replace(".", "/").split("/")
        if leaf == "weight":
            if value.ndim == 4:  # conv [O, I, kh, kw] -> [kh, kw, I, O]
                leaf, value = "kernel", value.transpose(2, 3, 1, 0)
            elif value.ndim == 2:  # linear [O, I] -> [I, O]
                leaf, value = "kernel", value.T
            else:  # LayerNorm / BatchNorm
                leaf = "scale"
        if leaf.startswith("running_"):
            stats[(*path, leaf[len("running_") :])] = value
        else:
            params[(*path, leaf)] = value
    return {"params": unflatten_dict(params), "batch_stats": unflatten_dict(stats)}


@pytest.mark.parametrize("patches", [HANDOUT_PATCHES, PAPER_PATCHES], ids=["handout", "paper"])
def test_segformer_logits_match_hf(patches):
    hf = hf_segformer(3, patches)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        hf.decode_head.batch_norm.running_mean.uniform_(-0.5, 0.5)
        hf.decode_head.batch_norm.running_var.uniform_(0.5, 2.0)
    variables = variables_from_hf(hf.state_dict())
    # HF's LayerNorms use torch's default epsilon.
    model = SegFormer(num_classes=3, layer_norm_eps=1e-5, **patches)
    expected_shapes = jax.tree.map(lambda x: x.shape, abstract_init(model, (1, 64, 64, 3)))
    assert jax.tree.map(lambda x: x.shape, variables) == expected_shapes

    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(images.transpose(0, 3, 1, 2))).logits
        ref = torch.nn.functional.interpolate(
            ref, size=(64, 64), mode="bilinear", align_corners=False
        )
    ours = jax.jit(lambda v, x: model.apply(v, x))(variables, jnp.asarray(images))
    np.testing.assert_allclose(
        np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=2e-4, rtol=1e-4
    )


def test_segformer_train_mode_smoke_runs():
    model = SegFormer(
        num_classes=3, hidden_sizes=(8, 16, 24, 32), num_heads=(1, 1, 1, 1), decoder_hidden_size=16
    )
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))

    @jax.jit
    def apply(v, x):
        return model.apply(
            v, x, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"]
        )

    out, updates = apply(variables, jnp.ones((2, 32, 32, 3)))
    assert out.shape == (2, 32, 32, 3) and np.all(np.isfinite(out))
    assert (
        flatten_dict(updates["batch_stats"]).keys() == flatten_dict(variables["batch_stats"]).keys()
    )
