"""The one checked tensor -> parameter path (dllab_jax/weights/convert.py) on hand-made trees."""

import jax
import numpy as np
import pytest

from dllab_jax.errors import UserError
from dllab_jax.weights import convert

TREE = {
    "encoder": {"layers_0": {"fc": {"kernel": jax.ShapeDtypeStruct((3, 2), np.float32)}}},
    "conv": {"kernel": jax.ShapeDtypeStruct((2, 2, 3, 4), np.float32)},  # HWIO
    "norm": {"scale": jax.ShapeDtypeStruct((4,), np.float32)},
}
TENSORS = {
    "encoder.layers.0.fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),  # [out, in]
    "conv.weight": np.arange(48, dtype=np.float32).reshape(4, 3, 2, 2),  # OIHW
    "norm.weight": np.ones(4, np.float16),
}


def test_names_layouts_and_dtype():
    assert convert.mirrored_key(("encoder", "layers_0", "fc", "kernel"), "m.") == (
        "m.encoder.layers.0.fc.weight"
    )
    out = convert.tree_from_tensors(TENSORS, TREE, convert.mirrored_key, what="test checkpoint")
    np.testing.assert_array_equal(
        out["encoder"]["layers_0"]["fc"]["kernel"], TENSORS["encoder.layers.0.fc.weight"].T
    )
    np.testing.assert_array_equal(
        out["conv"]["kernel"], TENSORS["conv.weight"].transpose(2, 3, 1, 0)
    )
    assert out["norm"]["scale"].dtype == np.float32


def test_missing_wrong_shape_and_unused_tensors_are_one_line_user_errors():
    missing = {k: v for k, v in TENSORS.items() if k != "norm.weight"}
    with pytest.raises(UserError, match=r"has no tensor 'norm\.weight' \(for parameter norm/"):
        convert.tree_from_tensors(missing, TREE, convert.mirrored_key, what="test checkpoint")
    wrong = {**TENSORS, "conv.weight": np.zeros((4, 3, 3, 3), np.float32)}
    with pytest.raises(UserError, match=r"'conv\.weight' has shape \(4, 3, 3, 3\).*\(4, 3, 2, 2\)"):
        convert.tree_from_tensors(wrong, TREE, convert.mirrored_key, what="test checkpoint")
    extra = {**TENSORS, "head.weight": np.zeros(1, np.float32)}
    convert.tree_from_tensors(extra, TREE, convert.mirrored_key, what="test checkpoint")
    with pytest.raises(UserError, match=r"'head\.weight'") as err:
        convert.tree_from_tensors(
            extra, TREE, convert.mirrored_key, what="test checkpoint", unused_allowed=False
        )
    assert "\n" not in str(err.value)
