"""DinoViT (dllab_jax/models/dino_vit.py): the position-embedding resize against torch's bicubic
interpolation, and ViT-S/16's parameter count against transformers' `ViTModel`. Features of
imported weights against torch are tests/weights/test_dino.py's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import ViTConfig, ViTModel

from dllab_jax.models.dino_vit import DinoViT, interpolate_pos_embed

pytestmark = pytest.mark.slow  # parity against transformers' PyTorch models


@pytest.mark.parametrize("size", [(4, 6), (4, 3), (4, 4), (14, 20), (14, 9), (5, 11)])
def test_position_resize_matches_torch_bicubic(size):
    g, d = size[0], 3
    pos = np.random.default_rng(1).normal(size=(1, 1 + g * g, d)).astype(np.float32)
    for out_h, out_w in [(size[1], size[1]), (size[1], g + 1)]:
        grid = torch.from_numpy(pos[:, 1:].reshape(1, g, g, d)).permute(0, 3, 1, 2)
        ref = torch.nn.functional.interpolate(
            grid, size=(out_h, out_w), mode="bicubic", align_corners=False
        )
        ref = ref.permute(0, 2, 3, 1).reshape(1, -1, d).numpy()
        ours = np.asarray(interpolate_pos_embed(jnp.asarray(pos), out_h, out_w))
        np.testing.assert_array_equal(ours[:, :1], pos[:, :1])  # the CLS position is kept
        np.testing.assert_allclose(ours[:, 1:], ref, atol=1e-5, rtol=0)


def test_vit_s16_parameter_count():
    abstract = jax.eval_shape(DinoViT().init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
    config = ViTConfig(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        image_size=224,
        patch_size=16,
        qkv_bias=True,
    )
    with torch.device("meta"):
        theirs = sum(p.numel() for p in ViTModel(config, add_pooling_layer=False).parameters())
    assert ours == theirs == 21_665_664


def test_a_deeper_stem_adds_stride_one_convs_and_keeps_the_token_grid():
    kwargs = dict(patch_size=4, hidden_size=8, depth=1, num_heads=2, pretrain_image_size=16)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 12, 3)), jnp.float32)
    model = DinoViT(**kwargs, stem_widths=(4, 6), stem_depth=2)
    variables = model.init(jax.random.key(0), images)
    params = variables["params"]
    assert params["stem_0_1"]["kernel"].shape == (3, 3, 4, 4)
    assert params["stem_1_1"]["kernel"].shape == (3, 3, 6, 6)
    shallow = DinoViT(**kwargs, stem_widths=(4, 6))
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    shallow_params = jax.eval_shape(shallow.init, jax.random.key(0), images)["params"]
    extra = (36 * 4 + 4) + (54 * 6 + 6) + 2 * (4 + 6)  # two 3x3 convs and their LayerNorms
    assert count(params) == count(shallow_params) + extra
    assert model.apply(variables, images).shape == (2, 4, 3, 8)


def test_conv_stem_shapes_and_parameter_count():
    """Two 3x3 stride-2 stem convs leave a 1x1 patch projection for patch size 4."""
    model = DinoViT(
        patch_size=4,
        hidden_size=8,
        depth=1,
        num_heads=2,
        pretrain_image_size=16,
        stem_widths=(4, 6),
    )
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 12, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), images)
    params = variables["params"]
    assert params["stem_0"]["kernel"].shape == (3, 3, 3, 4)
    assert params["stem_1"]["kernel"].shape == (3, 3, 4, 6)
    assert params["patch_embed"]["kernel"].shape == (1, 1, 6, 8)
    stem = (27 * 4 + 4) + (36 * 6 + 6) + 2 * (4 + 6)  # convs and their LayerNorms
    plain = DinoViT(patch_size=4, hidden_size=8, depth=1, num_heads=2, pretrain_image_size=16)
    plain_params = jax.eval_shape(plain.init, jax.random.key(0), images)["params"]
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    # The plain layout's 4x4x3 -> 8 projection becomes 1x1x6 -> 8.
    assert count(params) == count(plain_params) + stem - (48 * 8) + (6 * 8)
    assert model.apply(variables, images).shape == (2, 4, 3, 8)
    with pytest.raises(ValueError, match="divisible"):
        DinoViT(patch_size=2, hidden_size=8, depth=1, num_heads=2, stem_widths=(4, 4)).init(
            jax.random.key(0), images
        )
