"""The PyTorch references of dllab_jax/bench/torch_models/ against the Flax models.

For every registry name, at small sizes and at the configs' defaults: the torch trainable
parameter count equals the Flax `params` count from `jax.eval_shape` (nothing computed; large
torch models are built on the meta device, shapes only), and on a tiny input the torch output
has the Flax output's shape (NCHW for NHWC). The torch constructors take the Flax arguments
with the Flax defaults. Outputs with the same weights are compared in test_torch_parity.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from torch import nn

from dllab_jax import optim, registry
from dllab_jax.bench.cases import SUITES
from dllab_jax.bench.torch_models import (
    TORCH_MODELS,
    build_torch_model,
    count_trainable,
)
from dllab_jax.config_utils import load_config
from dllab_jax.models import build_model, model_class
from dllab_jax.models.seg_heads import HEADS

CONCEPT_DIMS = (2, 3, 1)  # dllab_jax/tasks/diffusion.py passes these to ContextUnet


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def count_all(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flax_inputs(name: str, image_shape, batch: int = 1):
    """The Flax model's positional inputs (zeros): images, plus t and concepts for diffusion."""
    images = jnp.zeros((batch, *image_shape[1:]))
    if name == "context_unet":
        return images, jnp.zeros((batch,)), tuple(jnp.zeros((batch, d)) for d in CONCEPT_DIMS)
    return (images,)


def torch_inputs(name: str, image_shape, batch: int = 2):
    rng = np.random.default_rng(0)
    _, h, w, c = image_shape
    images = torch.from_numpy(rng.normal(size=(batch, c, h, w)).astype(np.float32))
    if name == "context_unet":
        t = torch.rand(batch, 1)
        return images, t, [torch.rand(batch, d) for d in CONCEPT_DIMS]
    return (images,)


def torch_extras(name: str, image_shape) -> dict:
    """What the Flax models read from their first input: channels, and image size for two."""
    _, h, w, c = image_shape
    if name == "context_unet":  # the task passes these as constructor arguments
        return {}
    extras = {"in_channels": c}
    if name in ("vit", "linear"):
        extras["image_size"] = (h, w)
    return extras


def flax_model(name: str, kwargs: dict):
    kwargs = dict(kwargs)
    frozen = kwargs.pop("frozen", None)  # the training loop's, not a config key (optim.py)
    model = build_model(ml_collections.ConfigDict({"name": name, **kwargs}))
    return model if frozen is None else model.clone(frozen=frozen)


def abstract_init(model, inputs):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))


def assert_counts_equal(name: str, kwargs: dict, image_shape) -> tuple[int, int]:
    """Asserts torch's trainable (and total) count equals Flax's; returns (torch, flax)."""
    params = abstract_init(flax_model(name, kwargs), flax_inputs(name, image_shape))["params"]
    with torch.device("meta"):
        reference = build_torch_model(name, **kwargs, **torch_extras(name, image_shape))
    # The frozen DINO backbone is in Flax's params but not trainable in torch.
    frozen = name == "dino_segmenter" and "backbone" in kwargs.get("frozen", ("backbone",))
    expected = count(params["head"]) if frozen else count(params)
    assert count_trainable(reference) == expected
    assert count_all(reference) == count(params)
    return count_trainable(reference), expected


# ------------------------------------------------------------------------ registry, defaults


def test_every_model_the_bench_trains_has_a_reference():
    # A new model needs a reference only once a benchmark suite trains it; the retrieval and
    # captioning models are timed against Hugging Face instead (bench/inference.py).
    trained = {
        case.make_config().model.name
        for suite in SUITES.values()
        for case in suite
        if case.kind == "train"
    }
    assert trained <= set(TORCH_MODELS)
    assert set(TORCH_MODELS) <= set(registry.models.names())


@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_torch_constructors_take_the_flax_arguments_and_defaults(name):
    fields = {
        f.name: f.default
        for f in dataclasses.fields(model_class(name))
        if f.name not in ("parent", "name", "dtype")
    }
    signature = inspect.signature(TORCH_MODELS[name]).parameters
    assert set(fields) <= set(signature)
    for field, default in fields.items():
        torch_default = signature[field].default
        if default is dataclasses.MISSING:
            assert torch_default is inspect.Parameter.empty, field
        else:
            assert torch_default == default, field


def test_factory_ignores_dtype_and_rejects_unknown_arguments():
    model = build_torch_model("cnn", num_classes=3, widths=(4,), dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="'stem'"):
        build_torch_model("cnn", num_classes=3, stem="cifar")
    with pytest.raises(ValueError, match="two_tower"):
        build_torch_model("two_tower")


def test_torch_is_imported_by_no_other_module_of_the_package():
    code = (
        "import importlib, sys\n"
        "import dllab_jax.bench, dllab_jax.train\n"
        "from dllab_jax import registry\n"
        "registry.models.import_all()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------- counts and shapes, small sizes

TINY_DINO = dict(
    patch_size=8, hidden_size=48, depth=1, num_heads=2, mlp_ratio=2.0, pretrain_image_size=32
)
TINY_SEGFORMER = dict(
    hidden_sizes=(8, 16, 24, 32),
    depths=(1, 1, 1, 1),
    num_heads=(1, 1, 1, 1),
    decoder_hidden_size=16,
)
TINY_CONTEXT_UNET = dict(features=8, image_size=8, in_channels=3, concept_dims=CONCEPT_DIMS)

SMALL = [
    pytest.param("linear", dict(num_classes=7), (1, 8, 6, 3), id="linear"),
    pytest.param("cnn", dict(num_classes=5, widths=(8, 16), dropout=0.3), (1, 16, 12, 1), id="cnn"),
    pytest.param("resnet18", dict(num_classes=10), (1, 32, 32, 3), id="resnet18-imagenet"),
    pytest.param(
        "resnet18", dict(num_classes=4, stem="cifar"), (1, 32, 32, 1), id="resnet18-cifar"
    ),
    pytest.param(
        "vit",
        dict(num_classes=3, embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2),
        (1, 16, 24, 3),
        id="vit",
    ),
    pytest.param(
        "unet", dict(num_classes=3, features=(4, 8), bottleneck=16), (1, 16, 16, 1), id="unet"
    ),
    pytest.param(
        "unet",
        dict(num_classes=3, features=(4, 8), bottleneck=16, skip_connections=False),
        (1, 16, 16, 3),
        id="unet-no-skips",
    ),
    pytest.param("fcn32", dict(num_classes=3), (1, 64, 64, 3), id="fcn32"),
    pytest.param("context_unet", TINY_CONTEXT_UNET, (1, 8, 8, 3), id="context_unet"),
    pytest.param(
        "context_unet", {**TINY_CONTEXT_UNET, "null_concepts": True}, (1, 8, 8, 3), id="cfg"
    ),
    *(
        pytest.param(
            "dino_segmenter",
            dict(num_classes=5, head=head, backbone=TINY_DINO),
            (1, 32, 48, 3),
            id=f"dino-{head}",
        )
        for head in sorted(HEADS)
    ),
    pytest.param(
        "dino_segmenter",
        dict(num_classes=5, head="conv", frozen=(), backbone=TINY_DINO),
        (1, 32, 48, 3),
        id="dino-unfrozen",
    ),
    pytest.param(
        "segformer", dict(num_classes=3, **TINY_SEGFORMER), (1, 32, 32, 3), id="segformer"
    ),
]


@pytest.mark.parametrize("name, kwargs, image_shape", SMALL)
def test_small_counts_and_forward_shapes(name, kwargs, image_shape):
    assert_counts_equal(name, kwargs, image_shape)
    model = flax_model(name, kwargs)
    inputs = flax_inputs(name, image_shape, batch=2)
    variables = abstract_init(model, inputs)
    expected = jax.eval_shape(lambda v: model.apply(v, *inputs), variables).shape
    if len(expected) == 4:  # NHWC -> NCHW
        expected = (expected[0], expected[3], expected[1], expected[2])
    torch.manual_seed(0)
    reference = build_torch_model(name, **kwargs, **torch_extras(name, image_shape)).eval()
    with torch.no_grad():
        out = reference(*torch_inputs(name, image_shape))
    assert tuple(out.shape) == expected
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------ counts at config defaults

# Classes the tasks pass as num_classes for the offline data of each config.
SHAPES_CLASSES = 10  # classification `shapes`
SCENES_CLASSES = 11  # `scenes` with labels="classes": background + 10 shape classes
CARLA_CLASSES = 13
VOC_CLASSES = 21
TRIMAP_CLASSES = 3  # the segformer default's `scenes` trimaps


def _config_case(spec, task_kwargs, image_shape):
    return pytest.param(spec, task_kwargs, image_shape, id=spec.removeprefix("configs/"))


def _classes(n):
    return {"num_classes": n}


DIFFUSION_TASK = dict(concept_dims=CONCEPT_DIMS, image_size=28, in_channels=3)
CONFIG_DEFAULTS = [
    *(
        _config_case(f"configs/classification.py:{p}", _classes(SHAPES_CLASSES), (1, 32, 32, 3))
        for p in ("cnn", "linear", "resnet18", "resnet18,cifar_stem", "vit")
    ),
    *(
        _config_case(f"configs/segmentation.py:{p}", _classes(SCENES_CLASSES), (1, 64, 64, 3))
        for p in ("unet", "no_skips", "fcn32")
    ),
    *(
        _config_case(f"configs/segmentation.py:{p}", _classes(CARLA_CLASSES), (1, 64, 64, 3))
        for p in ("carla", "carla,no_skips", "carla,fcn32")
    ),
    *(
        _config_case(f"configs/diffusion.py{p}", DIFFUSION_TASK, (1, 28, 28, 3))
        for p in ("", ":faithful", ":cfg", ":faithful,cfg")
    ),
    *(
        _config_case(f"configs/seg_heads.py:{p}", _classes(SCENES_CLASSES), (1, 64, 64, 3))
        for p in (*sorted(HEADS), "pretrain")
    ),
    *(
        _config_case(f"configs/seg_heads.py:voc,{h}", _classes(VOC_CLASSES), (1, 224, 224, 3))
        for h in sorted(HEADS)
    ),
    _config_case("configs/segformer.py", _classes(TRIMAP_CLASSES), (1, 64, 64, 3)),
    _config_case("configs/segformer.py:handout_stem", _classes(TRIMAP_CLASSES), (1, 64, 64, 3)),
    _config_case("configs/segformer.py:pretrain", _classes(SCENES_CLASSES), (1, 64, 64, 3)),
]


@pytest.mark.parametrize("spec, task_kwargs, image_shape", CONFIG_DEFAULTS)
def test_config_default_counts(spec, task_kwargs, image_shape):
    config = load_config(spec)
    model_config = config.model.to_dict()
    name = model_config.pop("name")
    kwargs = {**model_config, **task_kwargs}
    if name == "dino_segmenter":  # what the optimiser leaves untrained runs frozen (optim.py)
        params = abstract_init(flax_model(name, kwargs), flax_inputs(name, image_shape))["params"]
        kwargs["frozen"] = optim.frozen_submodules(params, config.optimizer.trainable)
    torch_count, flax_count = assert_counts_equal(name, kwargs, image_shape)
    print(f"{spec}: torch {torch_count:,} trainable, flax {flax_count:,}")


# ------------------------------------------------------------------- torch-only behaviour


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval_mode():
    model = build_torch_model("dino_segmenter", num_classes=5, head="conv", backbone=TINY_DINO)
    model.train()
    assert not model.backbone.training and model.head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())


def test_context_unet_drop_mask_replaces_concepts_by_nulls():
    model = build_torch_model("context_unet", **TINY_CONTEXT_UNET, null_concepts=True).eval()
    with torch.no_grad():
        for p in (*model.null_embed1, *model.null_embed2):
            p.normal_()
        x, t, a = torch_inputs("context_unet", (1, 8, 8, 3))
        b = [torch.rand_like(c) for c in a]
        dropped = model(x, t, a, drop_mask=torch.ones(2, dtype=torch.bool))
        torch.testing.assert_close(dropped, model(x, t, b, drop_mask=torch.ones(2, 3) > 0))
        keep = torch.zeros(2, 3, dtype=torch.bool)
        torch.testing.assert_close(model(x, t, a, drop_mask=keep), model(x, t, a))
        assert not torch.allclose(dropped, model(x, t, a), atol=1e-4)
    with pytest.raises(ValueError, match="null_concepts"):
        build_torch_model("context_unet", **TINY_CONTEXT_UNET)(x, t, a, drop_mask=keep)
