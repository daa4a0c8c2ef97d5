"""DINO weight import (dllab_jax/weights/dino.py) against transformers' PyTorch `ViTModel`.

The reference is a tiny random-weight `ViTModel` (every tensor randomised, LayerNorms and
position embeddings included, so a wrong name mapping or position resize shows), saved as a
local HF folder and, renamed into the original DINO key layout (fused qkv), as a `.pth`
file. Our patch features must equal `last_hidden_state[:, 1:]` at the native size and, with
`interpolate_pos_encoding=True`, at other sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from transformers import ViTConfig, ViTModel

from dllab_jax.errors import UserError
from dllab_jax.init_from import load_by_name
from dllab_jax.models.dino_vit import DinoViT
from dllab_jax.models.seg_heads import FrozenBackboneSegmenter
from dllab_jax.weights.dino import (
    read_dino_state_dict,
    read_hf_vit,
    read_init_variables,
)

# hidden 128 so that DINO's head rule (hidden // 64) infers the 2 heads; intermediate 256
# exercises a non-default mlp_ratio.
TINY = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=256,
    image_size=32,
    patch_size=8,
    layer_norm_eps=1e-6,
    qkv_bias=True,
)
NATIVE = (32, 32)
SIZES = [NATIVE, (48, 48), (24, 40)]  # native 4x4 grid, upsampled 6x6, mixed 3x5
TOL = 1e-4

pytestmark = pytest.mark.slow  # parity against transformers' PyTorch models


@pytest.fixture(scope="module")
def torch_vit():
    torch.manual_seed(0)
    config = ViTConfig(**TINY, attn_implementation="eager")
    model = ViTModel(config, add_pooling_layer=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Large embeddings make a wrong position resize visible through the LayerNorms.
            p.normal_(0.0, 1.0 if "embeddings." in name and "patch" not in name else 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def hf_folder(torch_vit, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_vit")
    torch_vit.save_pretrained(folder)  # hub names, model.safetensors
    return folder


def _dino_layout(model: ViTModel) -> dict[str, torch.Tensor]:
    """The model's tensors under original-DINO keys, q|k|v fused as DINO stores them."""
    sd = model.state_dict()  # transformers 5 module names
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    for leaf in ("weight", "bias"):
        out[f"patch_embed.proj.{leaf}"] = sd[f"embeddings.patch_embeddings.projection.{leaf}"]
        for i in range(TINY["num_hidden_layers"]):
            hf, dino = f"layers.{i}.", f"blocks.{i}."
            qkv = [sd[f"{hf}attention.{n}_proj.{leaf}"] for n in "qkv"]
            out[f"{dino}attn.qkv.{leaf}"] = torch.cat(qkv, 0)
            for ours, theirs in (
                ("attn.proj", "attention.o_proj"),
                ("norm1", "layernorm_before"),
                ("norm2", "layernorm_after"),
                ("mlp.fc1", "mlp.fc1"),
                ("mlp.fc2", "mlp.fc2"),
            ):
                out[f"{dino}{ours}.{leaf}"] = sd[f"{hf}{theirs}.{leaf}"]
    return {k: v.clone() for k, v in out.items()}


@pytest.fixture(scope="module")
def dino_files(torch_vit, tmp_path_factory):
    """{"plain": the published-backbone layout, "teacher": a DINO training checkpoint}."""
    folder = tmp_path_factory.mktemp("dino")
    tensors = _dino_layout(torch_vit)
    plain = folder / "dino_tiny_pretrain.pth"
    torch.save(tensors, plain)
    wrapped = {
        "teacher": {
            **{f"backbone.{k}": v for k, v in tensors.items()},
            "head.last_layer.weight_g": torch.ones(7, 1),  # the DINO projection head: ignored
        },
        "student": {f"module.backbone.{k}": torch.zeros_like(v) for k, v in tensors.items()},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=8),  # as main_dino.py saves
    }
    training = folder / "checkpoint.pth"
    torch.save(wrapped, training)
    return {"plain": plain, "teacher": training}


def _images(size, batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *size, 3)).astype(np.float32)


def _torch_features(model, images):
    """PyTorch patch tokens [B, h, w, D] (CLS dropped) for NHWC numpy images."""
    b, h, w, _ = images.shape
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        out = model(pixel_values=pixels, interpolate_pos_encoding=(h, w) != NATIVE)
    tokens = out.last_hidden_state[:, 1:].numpy()
    p = TINY["patch_size"]
    return tokens.reshape(b, h // p, w // p, -1)


@pytest.fixture(scope="module")
def hf_import(hf_folder):
    return read_hf_vit(hf_folder)


@pytest.fixture(scope="module")
def apply_fn(hf_import):
    kwargs, _ = hf_import
    return jax.jit(lambda variables, x: DinoViT(**kwargs).apply(variables, x))


def test_hf_kwargs(hf_import):
    kwargs, _ = hf_import
    assert kwargs == dict(
        patch_size=8,
        hidden_size=128,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        qkv_bias=True,
        layer_norm_eps=1e-6,
        pretrain_image_size=32,
    )


@pytest.mark.parametrize("size", SIZES)
def test_hf_features_match_torch(torch_vit, hf_import, apply_fn, size):
    _, variables = hf_import
    images = _images(size)
    ours = np.asarray(apply_fn(variables, jnp.asarray(images)))
    ref = _torch_features(torch_vit, images)
    assert ours.shape == ref.shape == (2, size[0] // 8, size[1] // 8, 128)
    diff = np.abs(ours - ref).max()
    print(f"HF import, {size[0]}x{size[1]}: max |ours - torch| = {diff:.2e}")
    assert diff < TOL


def test_hf_transformers5_names_and_vit_prefix(torch_vit, hf_folder, hf_import, tmp_path):
    """A folder with in-memory transformers-5 names under `vit.` loads to the same params."""
    tensors = {f"vit.{k}": v.numpy() for k, v in torch_vit.state_dict().items()}
    tensors["vit.pooler.dense.weight"] = np.zeros((4, 4), np.float32)  # ignored
    save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(hf_folder / "config.json", tmp_path / "config.json")
    kwargs, variables = read_hf_vit(tmp_path)
    assert kwargs == hf_import[0]
    jax.tree.map(np.testing.assert_array_equal, variables, hf_import[1])


@pytest.mark.parametrize("layout", ["plain", "teacher"])
def test_dino_state_dict_matches_torch(torch_vit, dino_files, hf_import, apply_fn, layout):
    kwargs, variables = read_dino_state_dict(dino_files[layout])
    assert kwargs == hf_import[0]  # sizes, heads (128 // 64) and eps 1e-6 inferred
    jax.tree.map(np.testing.assert_array_equal, variables, hf_import[1])
    images = _images((24, 40), seed=2)
    diff = np.abs(np.asarray(apply_fn(variables, images)) - _torch_features(torch_vit, images))
    print(f"DINO import ({layout}), 24x40: max |ours - torch| = {diff.max():.2e}")
    assert diff.max() < TOL


def test_mismatched_checkpoint_raises(hf_folder, dino_files, tmp_path):
    # A config.json that claims another width than its weights.
    config = json.loads((hf_folder / "config.json").read_text())
    config.update(hidden_size=64, num_attention_heads=1)
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(hf_folder / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(UserError, match=r"tensor 'encoder\.layer\.0\..*' has shape \(128,\)"):
        read_hf_vit(tmp_path)
    # A requested size the weights do not have.
    with pytest.raises(
        UserError, match=r"'blocks\.0\.mlp\.fc1\.bias' has shape \(256,\).*needs \(512,\)"
    ):
        read_dino_state_dict(dino_files["plain"], mlp_ratio=4.0)
    with pytest.raises(UserError, match=r"has no tensor 'blocks\.2\."):
        read_dino_state_dict(dino_files["plain"], depth=3)
    with pytest.raises(UserError, match="no DINO weights"):
        read_init_variables(tmp_path / "missing")
    # Loading into a segmenter whose backbone is another width (the init_from path).
    source, _ = read_init_variables(hf_folder)
    backbone = dict(patch_size=8, hidden_size=64, depth=2, num_heads=2, pretrain_image_size=32)
    segmenter = FrozenBackboneSegmenter(5, "linear", backbone=backbone)
    target = jax.eval_shape(segmenter.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(UserError, match=r"'backbone/.*' has shape \(64,\) here but \(128,\)"):
        load_by_name(target["params"], source["params"], dont_load=("head/.*",))


def test_read_init_variables_loads_into_segmenter(hf_folder, hf_import):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    source, meta = read_init_variables(hf_folder, "best", sharding=sharding)
    assert set(source) == {"params"} and set(source["params"]) == {"backbone"}
    assert meta["step"] == 0 and meta["backbone_kwargs"] == hf_import[0]
    kwargs = {k: v for k, v in hf_import[0].items()}
    segmenter = FrozenBackboneSegmenter(3, "conv", backbone=kwargs)
    target = jax.eval_shape(segmenter.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    params, loaded = load_by_name(target["params"], source["params"], dont_load=("head/.*",))
    assert len(loaded) == len(jax.tree.leaves(hf_import[1]))
    assert all(name.startswith("backbone/") for name in loaded)
    jax.tree.map(np.testing.assert_array_equal, params["backbone"], hf_import[1]["params"])
