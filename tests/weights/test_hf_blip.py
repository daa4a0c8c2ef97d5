"""BLIP towers and TwoTower against transformers' PyTorch BLIP, and the checkpoint importer
(dllab_jax/weights/hf_blip.py).

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
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict
from model_checks import (
    HF_TINY_TEXT,
    HF_TINY_VISION,
    blip_retrieval_torch_count,
    count,
    randomise_blip_,
)
from transformers import BlipConfig, BlipForImageTextRetrieval

from dllab_jax.errors import UserError
from dllab_jax.models.blip_sizes import TWO_TOWER_SIZES
from dllab_jax.models.blip_text import BlipTextEncoder
from dllab_jax.models.two_tower import TwoTower
from dllab_jax.weights.convert import abstract_variables
from dllab_jax.weights.hf_blip import (
    image_text_inputs,
    text_encoder_params_from_state_dict,
    two_tower_from_hf,
    two_tower_params_from_state_dict,
)
from dllab_jax.weights.reader import read_hf_state_dict

EMBED = 16
BATCH, LENGTH = 3, 7
LENGTHS = (7, 4, 6)  # tokens per text; the rest is padding
TOL = 1e-4

pytestmark = pytest.mark.slow  # parity against transformers' PyTorch models


def abstract_params(module: TwoTower) -> dict:
    return abstract_variables(module, *image_text_inputs(module))


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = BlipConfig(
        vision_config=HF_TINY_VISION, text_config=HF_TINY_TEXT, image_text_hidden_size=EMBED
    )
    return randomise_blip_(BlipForImageTextRetrieval(config))


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
    ids = rng.integers(4, HF_TINY_TEXT["vocab_size"], size=(BATCH, LENGTH)) * mask
    return images, ids.astype(np.int32), mask


def to_torch(images, ids, mask):
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2),
        torch.from_numpy(ids).long(),
        torch.from_numpy(mask).long(),
    )


def test_two_tower_matches_pytorch(hf_model, hf_folder, inputs):
    model, variables = two_tower_from_hf(hf_folder)
    assert (model.image["hidden_size"], model.text["hidden_size"], model.embed_dim) == (48, 32, 16)

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


def test_parameter_count_equals_pytorch(hf_model):
    tiny = TWO_TOWER_SIZES["tiny"]
    model = TwoTower(
        image={**tiny["image"], "image_size": 16, "hidden_size": 48, "num_layers": 2,
               "num_heads": 4, "mlp_dim": 80},
        text={**tiny["text"], "vocab_size": 99, "hidden_size": 32, "num_heads": 2,
              "mlp_dim": 56, "max_position_embeddings": 20},
        embed_dim=EMBED,
    )  # fmt: skip
    assert count(abstract_params(model)) == blip_retrieval_torch_count(hf_model)


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
        "from dllab_jax.weights.reader import read_hf_state_dict\n"
        f"sd = read_hf_state_dict({str(hf_folder)!r})\n"
        "assert 'vision_proj.weight' in sd, sorted(sd)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
