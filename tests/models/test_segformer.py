"""SegFormer (dllab_jax/models/segformer.py, SPEC E3): parameter counts against hand formulas and
HF transformers' `SegformerForSemanticSegmentation`; logits against HF's after copying its
weights.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict, unflatten_dict
from model_checks import abstract_init, count_params, output_shape

from dllab_jax import performance
from dllab_jax.models.segformer import SegFormer

pytestmark = pytest.mark.slow  # parity against a PyTorch reference


HANDOUT_PATCHES = dict(patch_sizes=(5, 3, 3, 3), strides=(2, 2, 2, 2))


PAPER_PATCHES = dict(patch_sizes=(7, 3, 3, 3), strides=(4, 2, 2, 2))


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
    variables = performance.jit_run_once(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))

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
