"""Loading other weights by parameter name (dllab_jax/init_from.py), on hand-made trees; the
loop's use of it is tested by the tasks that start from a pre-training run."""

import jax.numpy as jnp
import numpy as np
import pytest

from dllab_jax import init_from
from dllab_jax.errors import UserError


def test_load_by_name_copies_matching_names_and_respects_dont_load():
    target = {"backbone": {"w": jnp.zeros((2, 2))}, "head": {"w": jnp.zeros(3)}}
    source = {"backbone": {"w": jnp.ones((2, 2))}, "head": {"w": jnp.ones(5)}}
    merged, loaded = init_from.load_by_name(target, source, dont_load=("head/.*",))
    np.testing.assert_array_equal(merged["backbone"]["w"], 1.0)
    np.testing.assert_array_equal(merged["head"]["w"], 0.0)
    assert loaded == ["backbone/w"]


def test_load_by_name_with_prefixes():
    target = {"tower": {"enc": {"w": jnp.zeros(2)}}, "proj": {"w": jnp.zeros(2)}}
    source = {"encoder": {"enc": {"w": jnp.ones(2)}}}
    merged, _ = init_from.load_by_name(
        target, source, target_prefix="tower/", source_prefix="encoder/"
    )
    np.testing.assert_array_equal(merged["tower"]["enc"]["w"], 1.0)
    np.testing.assert_array_equal(merged["proj"]["w"], 0.0)


def test_load_by_name_fails_loudly_on_missing_names_and_shapes():
    target = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    with pytest.raises(UserError, match="'b' is not in the source"):
        init_from.load_by_name(target, {"a": jnp.ones(2)})
    with pytest.raises(UserError, match=r"shape \(2,\) here but \(3,\)"):
        init_from.load_by_name(target, {"a": jnp.ones(3), "b": jnp.ones(2)})
