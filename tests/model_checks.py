"""Helpers the model and weight tests share (imported as `from model_checks import ...`):
parameter counts and abstract inits without compute, random variables, a scale-relative
closeness check, and perturbing a torch reference's 1-D tensors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch


def count_params(variables) -> int:
    """Counts `params` leaves only (BatchNorm running stats are buffers in torch)."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def abstract_init(model, image_shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(image_shape)))


def output_shape(model, image_shape):
    variables = abstract_init(model, image_shape)
    return jax.eval_shape(lambda v: model.apply(v, jnp.zeros(image_shape)), variables).shape


def random_variables(model, image_shape, seed=0):
    """Random numpy variables shaped as `model.init`'s, without compiling its initialisers.

    (Eager initialisers compile once per parameter shape, about 0.8 s each on this CPU.)
    """
    rng = np.random.default_rng(seed)
    leaf = lambda path, x: (
        rng.uniform(0.5, 1.5, x.shape) if path[-1].key == "var" else rng.normal(0, 0.2, x.shape)
    ).astype(np.float32)
    return jax.tree.map_with_path(leaf, dict(abstract_init(model, image_shape)))


def assert_close_to_scale(ours, ref, tol):
    """Max abs difference at most `tol` times the largest reference magnitude."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    scale = max(np.abs(ref).max(), 1e-6)
    err = np.abs(ours - ref).max() / scale
    assert err < tol, f"max error {err:.2e} of scale {scale:.3g} (tolerance {tol:.0e})"


def randomise_(module: torch.nn.Module, seed: int) -> None:
    """Perturbs every 1-D tensor (biases, norm affine, BN running stats) so none is trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype != torch.float32 or t.ndim != 1:
                continue
            noise = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("weight"):  # norm scales: around 1
                t.copy_(1.0 + 0.2 * noise)
            else:
                t.copy_(0.1 * noise)


@functools.cache
def torch_resnet(stem):
    """(torch ResNet-18 in eval mode with random BN, our variables converted from it), built
    once per stem (the reference is dllab_jax/bench/torch_models')."""
    from dllab_jax.bench.torch_models import TorchResNet18
    from dllab_jax.weights.torchvision_resnet18 import variables_from_torchvision_resnet18

    torch.manual_seed(0)
    model = TorchResNet18(10, stem).eval()
    randomise_(model, seed=1)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, variables_from_torchvision_resnet18(state, stem=stem)


# ------------------------------------------------------------------- BLIP references
# The tiny random-weight BLIP of the BLIP tests: towers of different widths and head counts
# (so a swapped size cannot pass), as transformers' vision and text configs.
HF_TINY_VISION = dict(
    hidden_size=48,
    intermediate_size=80,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=16,
    patch_size=4,
)
PAD, DEC, SEP = 0, 1, 3  # BLIP: pad 0, bos = [DEC], eos = [SEP]
HF_TINY_TEXT = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=56,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=20,
    # transformers 5 needs these set for a non-default vocabulary.
    bos_token_id=DEC,
    eos_token_id=2,
    pad_token_id=PAD,
    sep_token_id=SEP,
)


def count(tree) -> int:
    """Elements in every leaf of a tree (arrays or shapes)."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def randomise_blip_(model: torch.nn.Module) -> torch.nn.Module:
    """Every tensor random (LayerNorm scales around 1), so a wrong epsilon, transpose or head
    split shows; returns the model in eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):  # the LayerNorm scales
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    return model.eval()


def blip_vision_param_count(v: dict) -> int:
    """Parameters of a `BlipVisionEncoder` of sub-config `v`, by hand."""
    d, m = v["hidden_size"], v["mlp_dim"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    return (
        v["patch_size"] ** 2 * 3 * d + d  # patch Conv
        + d + (1 + patches) * d  # class token, positions
        + v["num_layers"] * (3 * d * d + 3 * d + d * d + d + d * m + m + m * d + d + 4 * d)
        + 2 * d  # post_layernorm
    )  # fmt: skip


def blip_retrieval_torch_count(model: torch.nn.Module) -> int:
    """BlipForImageTextRetrieval's parameters that TwoTower holds: the two towers (the text
    tower in text-only mode, without `crossattention`) and the projections (no `itm_head`)."""
    towers = ("vision_model.", "text_encoder.", "vision_proj.", "text_proj.")
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.startswith(towers) and ".crossattention." not in name
    )
