"""The one checked path from checkpoint tensors to our parameter trees.

Every importer gives `tree_from_tensors` the tree it must fill (shapes only, from
`abstract_variables`) and a rule from our parameter path to the checkpoint key; each leaf is
looked up, checked for its shape in the checkpoint's torch layout, and converted: Dense
kernels [out, in] -> [in, out], Conv kernels OIHW -> HWIO, everything else as is. A missing
key or a wrong shape is a one-line UserError naming the key and both shapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from dllab_jax.errors import UserError

# Our stacks are `layers_<i>` / `layer_<i>`; HF's are ModuleLists `layers.<i>` / `layer.<i>`.
_STACK = re.compile(r"^(layers?)_(\d+)$")
# Flax leaf name -> torch name (BatchNorm statistics included).
TORCH_LEAF = {
    "kernel": "weight",
    "scale": "weight",
    "embedding": "weight",
    "mean": "running_mean",
    "var": "running_var",
}


def mirrored_key(path: tuple[str, ...], prefix: str = "") -> str:
    """The torch state-dict key of a Flax path whose module names mirror torch's.

    Args:
      path: e.g. ("encoder", "layers_0", "self_attn", "qkv", "kernel").
      prefix: prepended as is, e.g. "vision_model." (ends with a dot unless empty).

    Returns:
      e.g. "vision_model.encoder.layers.0.self_attn.qkv.weight".
    """
    *modules, leaf = path
    names = [_STACK.sub(r"\1.\2", m) for m in modules] + [TORCH_LEAF.get(leaf, leaf)]
    return prefix + ".".join(names)


def to_flax_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    """A torch tensor in our layout: Linear [out, in] -> [in, out], Conv OIHW -> HWIO."""
    if leaf == "kernel":
        return array.T if array.ndim == 2 else array.transpose(2, 3, 1, 0)
    return array


def torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Inverse of `to_flax_layout` on shapes: an expected shape in the checkpoint's terms."""
    if leaf == "kernel":
        return shape[::-1] if len(shape) == 2 else (shape[3], shape[2], shape[0], shape[1])
    return shape


def abstract_variables(module, *inputs, collections: tuple[str, ...] = ("params",)) -> dict:
    """The module's variable shapes (`jax.ShapeDtypeStruct`s), traced without computing.

    Returns:
      {collection: tree} for `collections`, or the "params" tree alone when that is the one
      collection asked for.
    """
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))
    if collections == ("params",):
        return variables["params"]
    return {c: variables[c] for c in collections}


def tree_from_tensors(
    tensors: Mapping[str, np.ndarray],
    abstract_tree: Mapping[str, Any],
    key_of: Callable[[tuple[str, ...]], str],
    *,
    what: str,
    model: str = "the model",
    hint: str = "is it a checkpoint of this model type and size?",
    unused_allowed: bool = True,
) -> dict:
    """Fills a tree from torch-layout tensors, each checked for presence and shape.

    Args:
      tensors: checkpoint key -> array (torch layout).
      abstract_tree: the tree to fill (arrays or `jax.ShapeDtypeStruct`s), e.g. from
        `abstract_variables(module, ...)`; its leaf names decide the layout (`kernel`).
      key_of: our path in `abstract_tree` -> checkpoint key.
      what: the checkpoint for messages, e.g. "BLIP checkpoint".
      model: the model for messages, e.g. "the model (hidden_size=384, ...)".
      hint: what a missing key may mean.
      unused_allowed: False: a checkpoint tensor that fills no leaf is an error too (the
        checkpoint is of another architecture); True: it is ignored (heads we do not build).

    Returns:
      A nested dict of float32 numpy arrays shaped as `abstract_tree`.

    Raises:
      UserError: a key is missing, a tensor has the wrong shape, or (unless
        `unused_allowed`) a tensor is left over.
    """
    out, used = {}, set()
    for path, target in flatten_dict(dict(abstract_tree)).items():
        key = key_of(path)
        if key not in tensors:
            raise UserError(
                f"{what} has no tensor {key!r} (for parameter {'/'.join(path)}); {hint}"
            )
        array = np.asarray(tensors[key], dtype=np.float32)
        expected = torch_shape(path[-1], tuple(target.shape))
        if array.shape != expected:
            raise UserError(
                f"{what} tensor {key!r} has shape {array.shape}, {model} needs {expected}; "
                "the checkpoint and the config do not match"
            )
        out[path] = np.ascontiguousarray(to_flax_layout(path[-1], array))
        used.add(key)
    unused = sorted(set(tensors) - used)
    if unused and not unused_allowed:
        raise UserError(
            f"{what} has tensor {unused[0]!r} that {model} does not have ({len(unused)} "
            "unexpected tensors in all); is it a checkpoint of this model type?"
        )
    return unflatten_dict(out)
