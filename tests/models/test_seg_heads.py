"""The four segmentation heads and `FrozenBackboneSegmenter` on a tiny DINO ViT."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict

from dllab_jax.errors import UserError
from dllab_jax.models.seg_heads import HEADS, FrozenBackboneSegmenter, TransformerHead

# Tiny backbone: 48 wide (divisible by the heads' default 6 heads), one block, patch 8, a 4x4
# pre-training grid, so the 32x48 input (4x6 grid) also resizes the position embeddings.
TINY = dict(
    patch_size=8, hidden_size=48, depth=1, num_heads=2, mlp_ratio=2.0, pretrain_image_size=32
)
NUM_CLASSES = 5
H, W = 32, 48


def _count(params) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


# D = 384, C = 21, by hand:
#   linear:      1x1 conv kernel 384*21 + bias 21                               =     8,085
#   conv:        3x3 conv kernel 3*3*384*21 + bias 21                           =    72,597
#   transformer: cls_emb 21*384                                     =   8,064
#                norm1, norm2: 2 * (384 + 384)                      =   1,536
#                attn query, key, value (no bias): 3 * 384*384      = 442,368
#                attn proj: 384*384 + 384                           = 147,840
#                patch_mlp, class_mlp: 2 * 2 * (384*384 + 384)      = 591,360
#                mask_norm: 21 + 21                                 =      42   = 1,191,210
#   shared_qk:   the transformer less one 384x384 projection: 1,191,210 - 147,456 = 1,043,754
HEAD_PARAMS = {
    "linear": 8_085,
    "conv": 72_597,
    "transformer": 1_191_210,
    "shared_qk": 1_043_754,
}


@pytest.mark.parametrize("name", sorted(HEAD_PARAMS))
def test_head_parameter_counts(name):
    features = jnp.zeros((1, 2, 3, 384))
    abstract = jax.eval_shape(HEADS[name](21).init, jax.random.key(0), features)
    assert _count(abstract["params"]) == HEAD_PARAMS[name]
    out = jax.eval_shape(HEADS[name](21).apply, abstract, features)
    assert out.shape == (1, 2, 3, 21)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_segmenter_shapes_and_frozen_backbone(head):
    model = FrozenBackboneSegmenter(NUM_CLASSES, head, backbone=TINY)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(2, H, W, 3)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(2, H, W, NUM_CLASSES)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), images)
    assert set(variables["params"]) == {"backbone", "head"}

    @jax.jit
    def loss_and_grads(params):
        def loss(p):
            logits = model.apply({"params": p}, images, train=True)
            return jnp.sum(logits * weights), logits

        return jax.value_and_grad(loss, has_aux=True)(params)

    (_, logits), grads = loss_and_grads(variables["params"])
    assert logits.shape == (2, H, W, NUM_CLASSES) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    for path, g in flatten_dict(grads["backbone"]).items():
        assert not np.asarray(g).any(), f"backbone gradient {'/'.join(path)} is not zero"
    for path, g in flatten_dict(grads["head"]).items():
        assert np.asarray(g).any(), f"head gradient {'/'.join(path)} is zero"


def test_unfrozen_backbone_computes_the_same_logits_and_trains():
    """`frozen=()` (the offline pre-training) changes gradients, not the forward."""
    frozen = FrozenBackboneSegmenter(NUM_CLASSES, "conv", backbone=TINY)
    unfrozen = FrozenBackboneSegmenter(NUM_CLASSES, "conv", backbone=TINY, frozen=())
    images = jnp.asarray(np.random.default_rng(1).normal(size=(2, H, W, 3)), jnp.float32)
    params = frozen.init(jax.random.key(0), images)["params"]
    np.testing.assert_array_equal(
        frozen.apply({"params": params}, images), unfrozen.apply({"params": params}, images)
    )
    grads = jax.grad(lambda p: jnp.sum(unfrozen.apply({"params": p}, images, train=True) ** 2))(
        params
    )
    for path, g in flatten_dict(grads["backbone"]).items():
        assert np.asarray(g).any(), f"backbone gradient {'/'.join(path)} is zero"


def test_upsampling_matches_torch_bilinear():
    """jax.image.resize 'bilinear' (as the segmenter uses it) = torch align_corners=False."""
    logits = np.random.default_rng(1).normal(size=(1, 4, 6, NUM_CLASSES)).astype(np.float32)
    ours = jax.image.resize(jnp.asarray(logits), (1, H, W, NUM_CLASSES), "bilinear")
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(logits).permute(0, 3, 1, 2),
        size=(H, W),
        mode="bilinear",
        align_corners=False,
    )
    np.testing.assert_allclose(np.asarray(ours), ref.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def test_shared_qk_shares_one_projection():
    features = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 4, 48)), jnp.float32)
    projections = {}
    for shared in (False, True):
        head = TransformerHead(NUM_CLASSES, shared_qk=shared)
        variables = head.init(jax.random.key(0), features)
        attn = variables["params"]["attn"]
        projections[shared] = sorted(attn)
        _, state = head.apply(variables, features, mutable=["intermediates"])
        q, k = state["intermediates"]["attn"]["q"][0], state["intermediates"]["attn"]["k"][0]
        assert q.shape == k.shape == (2, 3 * 4 + NUM_CLASSES, 48)
        assert np.array_equal(q, k) == shared
    assert projections[False] == ["key", "proj", "query", "value"]
    assert projections[True] == ["proj", "qk", "value"]  # one Dense fewer


def test_unknown_head_is_a_user_error():
    model = FrozenBackboneSegmenter(NUM_CLASSES, "mlp", backbone=TINY)
    with pytest.raises(UserError, match="head is 'mlp'"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, H, W, 3)))
