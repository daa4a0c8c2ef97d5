"""The UvA ViT (dllab_jax/models/vit.py): parameter count and logits against the PyTorch UvA
tutorial 11 ViT (dllab_jax/bench/torch_models), patch order, dropout, bfloat16.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from model_checks import (
    abstract_init,
    assert_close_to_scale,
    count_params,
    random_variables,
    randomise_,
)

from dllab_jax.bench.torch_models import TorchVisionTransformer
from dllab_jax.models.vit import ViT, ViTEncoder, patchify

pytestmark = pytest.mark.slow  # parity against a PyTorch reference


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
    ours = abstract_init(ViT(num_classes=10), (1, 32, 32, 3))
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
    ours = ViT(num_classes=10).apply(variables, VIT_IMAGES, rngs={"dropout": jax.random.key(0)})
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
    model = ViT(num_classes=10, dropout=0.5, **TINY_VIT)
    variables = random_variables(model, images.shape)
    rngs = lambda seed: {"dropout": jax.random.key(seed)}
    evaluated = model.apply(variables, images)
    np.testing.assert_array_equal(model.apply(variables, images, rngs=rngs(1)), evaluated)
    np.testing.assert_array_equal(
        ViT(num_classes=10, dropout=0.0, **TINY_VIT).apply(variables, images, train=True), evaluated
    )
    a = model.apply(variables, images, train=True, rngs=rngs(1))
    assert not np.allclose(a, model.apply(variables, images, train=True, rngs=rngs(2)))
    assert not np.allclose(a, evaluated)


def test_vit_bfloat16_compute_keeps_float32_params():
    images = VIT_IMAGES[:, :16, :16]
    variables = random_variables(ViT(num_classes=10, **TINY_VIT), images.shape)
    model = ViT(num_classes=10, dtype=jnp.bfloat16, **TINY_VIT)
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    ours = model.apply(variables, images)
    assert ours.dtype == jnp.float32
    assert_close_to_scale(ours, ViT(num_classes=10, **TINY_VIT).apply(variables, images), 0.1)
