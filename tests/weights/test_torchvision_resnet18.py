"""The torchvision ResNet-18 converter (dllab_jax/weights/torchvision_resnet18.py): the
converted tree is the model's, and a wrong checkpoint is a one-line UserError.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from model_checks import abstract_init, torch_resnet

from dllab_jax.errors import UserError
from dllab_jax.models.resnet import ResNet18
from dllab_jax.weights.torchvision_resnet18 import variables_from_torchvision_resnet18

STEMS = pytest.mark.parametrize("stem", ["imagenet", "cifar"])


@STEMS
def test_resnet18_converted_tree_matches_init(stem):
    _, variables = torch_resnet(stem)
    expected = abstract_init(ResNet18(10, stem=stem), (1, 32, 32, 3))
    shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
    assert shapes(variables) == shapes(dict(expected))


def test_converter_rejects_missing_key_wrong_shape_and_extra_key():
    model, _ = torch_resnet("imagenet")
    state = {k: v.numpy() for k, v in model.state_dict().items()}

    missing = dict(state)
    del missing["layer3.1.bn2.running_var"]
    with pytest.raises(UserError, match=r"layer3\.1\.bn2\.running_var") as err:
        variables_from_torchvision_resnet18(missing)
    assert "\n" not in str(err.value)

    wrong = dict(state)
    wrong["layer2.0.downsample.0.weight"] = np.zeros((128, 64, 3, 3), np.float32)
    with pytest.raises(UserError, match=r"layer2\.0\.downsample\.0\.weight.*\(128, 64, 3, 3\)"):
        variables_from_torchvision_resnet18(wrong)

    with pytest.raises(UserError, match=r"conv1\.weight"):  # 7x7 weights, cifar stem expected
        variables_from_torchvision_resnet18(state, stem="cifar")

    with pytest.raises(UserError, match=r"fc\.weight"):
        variables_from_torchvision_resnet18({k: v for k, v in state.items() if k != "fc.weight"})

    extra = {**state, "layer5.0.conv1.weight": np.zeros((1,), np.float32)}
    with pytest.raises(UserError, match=r"layer5\.0\.conv1\.weight"):
        variables_from_torchvision_resnet18(extra)
