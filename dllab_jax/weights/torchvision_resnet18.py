"""`config.init_from.format = "torchvision_resnet18"`: torchvision ResNet-18 weights as `ResNet18`.

`ResNet18`'s names mirror torchvision's state dict (`backbone/layer2_0/downsample_conv` is
`layer2.0.downsample.0`, the classifier `head` is `fc`), so the conversion is a renaming
through `convert.tree_from_tensors`: Conv weights [O, I, kh, kw] -> [kh, kw, I, O], Linear
[O, I] -> [I, O]; BatchNorm weight/bias/running_mean/running_var become scale/bias in
`params` and mean/var in `batch_stats`. `num_batches_tracked` is ignored; any other tensor
ResNet-18 does not have is an error (the file is of another architecture).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from dllab_jax import registry
from dllab_jax.errors import UserError
from dllab_jax.models.resnet import ResNet18, check_stem
from dllab_jax.weights.convert import TORCH_LEAF, abstract_variables, tree_from_tensors
from dllab_jax.weights.reader import numpy_tensors, published, read_weight_file

_MODULES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1", "head": "fc"}


def torchvision_key(path: tuple[str, ...]) -> str:
    """The torchvision key of a ResNet18 variable path, e.g. ("params", "backbone",
    "layer2_0", "downsample_conv", "kernel") -> "layer2.0.downsample.0.weight"."""
    _, *modules, leaf = path  # the collection (params, batch_stats) is not in the key
    if modules[0] == "backbone":
        modules = modules[1:]
    names = [_MODULES.get(m, re.sub(r"^layer(\d)_(\d)$", r"layer\1.\2", m)) for m in modules]
    return ".".join([*names, TORCH_LEAF.get(leaf, leaf)])


def variables_from_torchvision_resnet18(
    state_dict: Mapping[str, np.ndarray], stem: str = "imagenet"
) -> dict:
    """Converts a torchvision-layout ResNet-18 state dict into variables for `ResNet18`.

    Args:
      state_dict: torchvision key -> array (`conv1.weight`, `layer1.0.bn1.running_mean`,
        `layer2.0.downsample.0.weight`, `fc.bias`, ...); numpy arrays, or anything
        `np.asarray` takes (e.g. CPU torch tensors from `state_dict()`).
      stem: the stem the weights were trained with ("imagenet" or "cifar"); it fixes the
        expected shape of `conv1.weight`. The number of classes is read from `fc.weight`.

    Returns:
      {"params": ..., "batch_stats": ...}: nested dicts of float32 numpy arrays, for
      `ResNet18(num_classes, stem=stem).apply(variables, images)`.

    Raises:
      UserError: a key is missing, has the wrong shape, or is not part of ResNet-18.
    """
    check_stem(stem)
    state = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    # The head's size is whatever the checkpoint was trained for; only its input is fixed.
    # (Without the head any size will do: its absence is the error reported.)
    head = state.get("fc.weight", state.get("fc.bias"))
    model = ResNet18(np.shape(head)[0] if head is not None else 1, stem=stem)
    abstract = abstract_variables(
        model, jnp.zeros((1, 32, 32, 3)), collections=("params", "batch_stats")
    )
    return tree_from_tensors(
        state,
        abstract,
        torchvision_key,
        what="torchvision ResNet-18 state dict",
        model=f"ResNet-18 (stem={stem!r})",
        unused_allowed=False,
    )


def read_torchvision_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torchvision ResNet-18 state dict from a local `.pth` (`torch.save(state_dict)`, as
    torchvision publishes `resnet18-f37072fd.pth`; needs torch) or `.safetensors` file."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise UserError(
            f"no torchvision ResNet-18 weights at {path}; set config.init_from.workdir to a "
            "local resnet18-*.pth or .safetensors file"
        )
    return numpy_tensors(read_weight_file(path))


@registry.weight_formats.register("torchvision_resnet18")
def read_init_variables(path: str, which: str = "best", *, sharding=None):
    """ImageNet (or any) torchvision ResNet-18 weights from a local file, named as
    `ResNet18`'s variables (`backbone/...`, `head`), for loading by name (e.g. into FCN-32's
    `backbone`); `which` is ignored.

    Returns:
      ({"params": ..., "model_state": {"batch_stats": ...}}, meta).
    """
    del which
    variables = variables_from_torchvision_resnet18(read_torchvision_state_dict(path))
    items = {
        "params": variables["params"],
        "model_state": {"batch_stats": variables["batch_stats"]},
    }
    return published(items, path, sharding)
