"""BLIP towers and TwoTower against transformers' PyTorch BLIP, and the checkpoint importer.

The reference is a tiny random-weight `BlipForImageTextRetrieval` (every tensor randomised,
LayerNorms included, so a wrong epsilon, transpose or head split shows), saved as a local
folder in the HF format and imported with `two_tower_from_hf`. Vision and text towers have
different widths and head counts so that a swapped size cannot pass. Compiles dominate on
CPU: one jitted function checks every TwoTower output, one the decoder mode.
"""

from __future__ import annotations

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict
from transformers import BlipConfig, BlipForImageTextRetrieval

from dllab_jax.errors import UserError
from dllab_jax.models.blip import TWO_TOWER_SIZES, BlipTextEncoder, TwoTower
from dllab_jax.models.blip_import import (
    read_hf_state_dict,
    text_encoder_params_from_state_dict,
    two_tower_from_hf,
    two_tower_params_from_state_dict,
)

VISION = dict(
    hidden_size=48,
    intermediate_size=80,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=16,
    patch_size=4,
)
TEXT = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=56,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=20,
    # transformers 5 needs these set for a non-default vocabulary.
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    sep_token_id=3,
)
EMBED = 16
BATCH, LENGTH = 3, 7
LENGTHS = (7, 4, 6)  # tokens per text; the rest is padding
TOL = 1e-4


def count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def abstract_params(module: TwoTower) -> dict:
    images = jnp.zeros((1, module.image_size, module.image_size, 3))
    ids = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(lambda: module.init(jax.random.key(0), images, ids, ids))["params"]


def torch_count(model: torch.nn.Module) -> int:
    """BlipForImageTextRetrieval's parameters that TwoTower holds: the two towers (the text
    tower in text-only mode, without `crossattention`) and the projections (no `itm_head`)."""
    towers = ("vision_model.", "text_encoder.", "vision_proj.", "text_proj.")
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.startswith(towers) and ".crossattention." not in name
    )


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = BlipConfig(vision_config=VISION, text_config=TEXT, image_text_hidden_size=EMBED)
    model = BlipForImageTextRetrieval(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):  # the LayerNorm scales
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("blip_tiny")
    hf_model.save_pretrained(folder)  # config.json + model.safetensors
    assert (folder / "model.safetensors").is_file()
    return folder


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(BATCH, 16, 16, 3)).astype(np.float32)
    mask = (np.arange(LENGTH)[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
    ids = rng.integers(4, TEXT["vocab_size"], size=(BATCH, LENGTH)) * mask
    return images, ids.astype(np.int32), mask


def to_torch(images, ids, mask):
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2),
        torch.from_numpy(ids).long(),
        torch.from_numpy(mask).long(),
    )


def test_two_tower_matches_pytorch(hf_model, hf_folder, inputs):
    model, variables = two_tower_from_hf(hf_folder)
    assert (model.vision_hidden_size, model.text_hidden_size, model.embed_dim) == (48, 32, 16)

    def all_outputs(m, images, ids, mask):
        return m.vision_model(images), m.text_encoder(ids, mask), m(images, ids, mask)

    run = jax.jit(lambda v, *x: model.apply(v, *x, method=all_outputs))
    vision, text, out = jax.tree.map(np.asarray, run(variables, *inputs))

    pixels, ids, mask = to_torch(*inputs)
    with torch.no_grad():
        ref_vision = hf_model.vision_model(pixel_values=pixels)[0]
        ref_text = hf_model.text_encoder(input_ids=ids, attention_mask=mask)[0]
        ref_image_embed = torch.nn.functional.normalize(
            hf_model.vision_proj(ref_vision[:, 0]), dim=-1
        )
        ref_text_embed = torch.nn.functional.normalize(hf_model.text_proj(ref_text[:, 0]), dim=-1)
        # HF's own retrieval path (use_itm_head=False) gives the cosine similarity matrix.
        ref_sims = hf_model(
            input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=False
        )[0]

    errors = {
        "vision hidden": np.abs(vision - ref_vision.numpy()).max(),
        "text hidden": np.abs(text - ref_text.numpy()).max(),
        "image_embed": np.abs(out["image_embed"] - ref_image_embed.numpy()).max(),
        "text_embed": np.abs(out["text_embed"] - ref_text_embed.numpy()).max(),
        "similarities": np.abs(out["image_embed"] @ out["text_embed"].T - ref_sims.numpy()).max(),
    }
    print("max abs differences vs PyTorch:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert vision.shape == (BATCH, 17, 48) and text.shape == (BATCH, LENGTH, 32)
    assert out["image_embed"].shape == out["text_embed"].shape == (BATCH, EMBED)
    # Scale check: the hidden states are LayerNorm outputs of order 1, not near zero.
    assert np.abs(ref_vision.numpy()).max() > 0.5 and np.abs(ref_text.numpy()).max() > 0.5
    assert max(errors.values()) < TOL, errors
    np.testing.assert_allclose(np.linalg.norm(out["text_embed"], axis=-1), 1.0, atol=1e-6)
    assert out["temperature"] == pytest.approx(0.1)


def test_decoder_mode_matches_pytorch(hf_model, hf_folder, inputs):
    """causal=True + cross_attention=True is HF BlipTextModel(is_decoder=True, ...)."""
    module = BlipTextEncoder(
        vocab_size=99,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        mlp_dim=56,
        max_position_embeddings=20,
        causal=True,
        cross_attention=True,
        encoder_hidden_size=48,
    )
    params = text_encoder_params_from_state_dict(read_hf_state_dict(hf_folder), module)
    assert "crossattention" in params["encoder"]["layer_0"]
    _, ids, mask = inputs
    rng = np.random.default_rng(1)
    image_tokens = rng.normal(size=(BATCH, 17, 48)).astype(np.float32)
    image_mask = np.ones((BATCH, 17), np.int32)
    run = jax.jit(lambda *x: module.apply({"params": params}, *x))
    out = np.asarray(run(ids, mask, image_tokens, image_mask))

    with torch.no_grad():
        ref = hf_model.text_encoder(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long(),
            encoder_hidden_states=torch.from_numpy(image_tokens),
            is_decoder=True,
            use_cache=False,
        )[0].numpy()
    err = np.abs(out - ref).max()
    print(f"decoder hidden states: max abs difference {err:.1e}")
    assert err < TOL

    # Causality: a token's output does not depend on later tokens.
    changed = ids.copy()
    changed[0, 5:] = 7
    out_changed = np.asarray(run(changed, mask, image_tokens, image_mask))
    np.testing.assert_allclose(out_changed[0, :5], out[0, :5], atol=1e-6)
    assert np.abs(out_changed[0, 5:] - out[0, 5:]).max() > 1e-2

    # encoder_attention_mask hides image tokens. (HF 5.23 drops this mask before its
    # cross-attention, so the reference here is ours with the hidden tokens changed; BLIP's
    # own image masks are all ones, where the two agree.)
    image_mask[1, 9:] = 0
    masked = np.asarray(run(ids, mask, image_tokens, image_mask))
    other_tokens = image_tokens.copy()
    other_tokens[1, 9:] = rng.normal(size=(8, 48))
    masked_other = np.asarray(run(ids, mask, other_tokens, image_mask))
    np.testing.assert_allclose(masked_other, masked, atol=1e-6)
    assert np.abs(masked[1] - out[1]).max() > 1e-2


def test_parameter_count_tiny_preset():
    s = TWO_TOWER_SIZES["tiny"]
    d, m, t, mt, e = (
        s["vision_hidden_size"],
        s["vision_mlp_dim"],
        s["text_hidden_size"],
        s["text_mlp_dim"],
        s["embed_dim"],
    )
    patches = (s["image_size"] // s["patch_size"]) ** 2
    vision = (
        s["patch_size"] ** 2 * 3 * d + d  # patch Conv
        + d + (1 + patches) * d  # class token, positions
        + s["vision_layers"] * (3 * d * d + 3 * d + d * d + d + d * m + m + m * d + d + 4 * d)
        + 2 * d  # post_layernorm
    )  # fmt: skip
    text = (
        (s["vocab_size"] + s["max_text_len"]) * t + 2 * t
        + s["text_layers"] * (4 * (t * t + t) + 2 * t + t * mt + mt + mt * t + t + 2 * t)
    )  # fmt: skip
    projections = d * e + e + t * e + e
    params = abstract_params(TwoTower(**s))
    assert count(params["vision_model"]) == vision == 1_801_920
    assert count(params) == vision + text + projections == 2_375_488


def test_parameter_count_equals_pytorch(hf_model):
    model = TwoTower(
        **{
            **TWO_TOWER_SIZES["tiny"],
            "image_size": 16,
            "vision_hidden_size": 48,
            "vision_layers": 2,
            "vision_heads": 4,
            "vision_mlp_dim": 80,
            "vocab_size": 99,
            "text_hidden_size": 32,
            "text_heads": 2,
            "text_mlp_dim": 56,
            "max_text_len": 20,
            "embed_dim": EMBED,
        }
    )
    assert count(abstract_params(model)) == torch_count(hf_model)


def test_parameter_count_blip_base():
    with torch.device("meta"):  # shapes only: no 900 MB allocation
        ref = BlipForImageTextRetrieval(BlipConfig(text_config=dict(num_attention_heads=12)))
    ours = count(abstract_params(TwoTower(**TWO_TOWER_SIZES["blip_base"])))
    print(f"blip_base TwoTower parameters: {ours:,}")
    assert ours == torch_count(ref) == 195_375_872


def test_temperature_learned_is_a_parameter_fixed_is_not():
    learned = TwoTower(init_temperature=0.07, learn_temperature=True)
    assert abstract_params(learned)["log_temperature"].shape == ()
    variables = learned.init(jax.random.key(0), method="temperature")
    assert float(variables["params"]["log_temperature"]) == pytest.approx(math.log(0.07))
    assert float(learned.apply(variables, method="temperature")) == pytest.approx(0.07)
    tau = learned.apply({"params": {"log_temperature": jnp.log(0.5)}}, method="temperature")
    assert float(tau) == pytest.approx(0.5)

    fixed = TwoTower(init_temperature=0.2)
    assert "log_temperature" not in abstract_params(fixed)
    assert float(fixed.apply({"params": {}}, method="temperature")) == pytest.approx(0.2)


def test_import_fills_learned_temperature(hf_folder):
    module, variables = two_tower_from_hf(hf_folder, learn_temperature=True, init_temperature=0.3)
    assert module.learn_temperature
    assert float(variables["params"]["log_temperature"]) == pytest.approx(math.log(0.3))


def test_import_errors_are_user_errors(hf_folder, tmp_path):
    module, _ = two_tower_from_hf(hf_folder)
    state_dict = read_hf_state_dict(hf_folder)

    key = "text_encoder.encoder.layer.1.output.dense.weight"
    missing = {k: v for k, v in state_dict.items() if k != key}
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        two_tower_params_from_state_dict(missing, module)

    wrong = {**state_dict, "vision_proj.weight": np.zeros((EMBED, 47), np.float32)}
    with pytest.raises(UserError, match=r"'vision_proj\.weight' has shape \(16, 47\)"):
        two_tower_params_from_state_dict(wrong, module)

    with pytest.raises(UserError, match="does not exist"):
        two_tower_from_hf(tmp_path / "nowhere")
    with pytest.raises(UserError, match="config"):
        two_tower_from_hf(tmp_path)  # exists, but empty
    (tmp_path / "config.json").write_text((hf_folder / "config.json").read_text())
    with pytest.raises(UserError, match="no weights"):
        two_tower_from_hf(tmp_path)

    # The checkpoint's unused tensors (itm_head, text-only mode's crossattention) are ignored.
    flat = flatten_dict(two_tower_params_from_state_dict(state_dict, module), sep="/")
    assert not any("crossattention" in k or "itm" in k for k in flat)


def test_safetensors_import_needs_no_torch(hf_folder):
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from dllab_jax.models.blip_import import read_hf_state_dict\n"
        f"sd = read_hf_state_dict({str(hf_folder)!r})\n"
        "assert 'vision_proj.weight' in sd, sorted(sd)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
