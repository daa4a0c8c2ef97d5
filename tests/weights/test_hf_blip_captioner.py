"""BlipCaptioner and caption decoding against transformers' PyTorch BLIP captioner, loaded with
the importer (dllab_jax/weights/hf_blip_captioner.py).

The reference is a tiny random-weight `BlipForConditionalGeneration` (every tensor
randomised, LayerNorms included), saved as a local HF folder and imported with
`captioner_from_hf`. Its logits, greedy and beam-search outputs (HF `generate`) must be ours
(dllab_jax/decoding.py). Adding a constant to the LM head's [SEP] bias in both models makes
captions end early at varied lengths, so the EOS, min_length and padding logic is exercised.
Compiles dominate on CPU: all decoding shares three programs (greedy, sampling, beam) at one
batch shape, plus one for the prompt of length 1.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from model_checks import DEC, HF_TINY_TEXT, HF_TINY_VISION, PAD, SEP, count, randomise_blip_
from transformers import BlipConfig, BlipForConditionalGeneration

from dllab_jax import decoding
from dllab_jax.errors import UserError
from dllab_jax.models.captioner import init_cache
from dllab_jax.weights.hf_blip_captioner import (
    captioner_from_hf,
    captioner_params_from_state_dict,
    read_init_variables,
)
from dllab_jax.weights.reader import read_hf_state_dict

BATCH = 4
MAX_LEN, MIN_LEN = 15, 6
PROMPT = np.array([DEC, 17, 40, 5], np.int32)  # [DEC] + "a picture of", no [SEP]
TOL = 1e-4

pytestmark = pytest.mark.slow  # parity against transformers' PyTorch models


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = BlipConfig(vision_config=HF_TINY_VISION, text_config=HF_TINY_TEXT)
    return randomise_blip_(BlipForConditionalGeneration(config))


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("blip_captioner_tiny")
    hf_model.save_pretrained(folder)  # config.json + model.safetensors (tied head stored once)
    return folder


@pytest.fixture(scope="module")
def captioner(hf_folder):
    return captioner_from_hf(hf_folder)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(BATCH, 16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def full_logits(captioner):
    """Teacher-forced logits of whole sequences: the uncached reference."""
    model, _ = captioner
    return jax.jit(lambda v, images, ids, mask: model.apply(v, images, ids, mask))


def sep_bias(variables, extra: float):
    """The variables with `extra` added to the LM head's [SEP] bias (captions end sooner)."""
    params = jax.tree.map(lambda x: x, variables["params"])
    head = params["text_decoder"]["cls"]["predictions"]
    head["bias"] = head["bias"].at[SEP].add(extra)
    return {"params": params}


def hf_sep_bias(hf_model, extra: float):
    model = copy.deepcopy(hf_model)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[SEP] += extra
    return model


def run(captioner, images, variables=None, prompt=PROMPT, **kwargs):
    model, imported = captioner
    tokens, lengths = decoding.decode(
        model,
        variables or imported,
        jnp.asarray(images),
        jnp.asarray(prompt),
        max_length=MAX_LEN,
        min_length=MIN_LEN,
        eos_id=SEP,
        pad_id=PAD,
        **kwargs,
    )
    return np.asarray(tokens), np.asarray(lengths)


def hf_generate(hf_model, images, **kwargs):
    """HF BLIP generate with our prompt (BLIP's: the tokenizer's [SEP] is dropped by HF)."""
    ids = np.concatenate([np.tile(PROMPT, (len(images), 1)), np.full((len(images), 1), SEP)], 1)
    with torch.no_grad():
        out = hf_model.generate(
            pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2),
            input_ids=torch.from_numpy(ids).long(),
            max_length=MAX_LEN,
            min_length=MIN_LEN,
            do_sample=False,
            **kwargs,
        )
    return out.numpy()


def lengths_of(tokens: np.ndarray, prompt_length: int = len(PROMPT)) -> np.ndarray:
    """Tokens up to and including the first generated [SEP] (else the row's length)."""
    out = []
    for row in tokens:
        ends = np.flatnonzero(row[prompt_length:] == SEP)
        out.append(prompt_length + ends[0] + 1 if len(ends) else len(row))
    return np.array(out)


def assert_well_formed(tokens, lengths, prompt=PROMPT):
    """Prompt unchanged, no [SEP] before MIN_LEN, [SEP] ends a short row, pad after it."""
    assert tokens.shape == (BATCH, MAX_LEN) and tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens[:, : len(prompt)], np.tile(prompt, (BATCH, 1)))
    np.testing.assert_array_equal(lengths, lengths_of(tokens, len(prompt)))
    for row, length in zip(tokens, lengths, strict=True):
        assert SEP not in row[len(prompt) : MIN_LEN]
        assert not np.any(row[len(prompt) : length - 1] == SEP)
        assert np.all(row[length:] == PAD)
        if length < MAX_LEN:
            assert row[length - 1] == SEP


def greedy_by_rerunning(full_logits, variables, images, prompt=PROMPT):
    """Greedy decoding without a cache: the whole sequence re-run for every new token."""
    tokens = np.full((BATCH, MAX_LEN), PAD, np.int32)
    tokens[:, : len(prompt)] = prompt
    done = np.zeros(BATCH, bool)
    ones = np.ones_like(tokens)
    for i in range(len(prompt), MAX_LEN):
        logits = np.array(full_logits(variables, images, tokens, ones))[:, i - 1]
        if i < MIN_LEN:
            logits[:, SEP] = -np.inf
        token = np.where(done, PAD, logits.argmax(-1))
        tokens[:, i] = token
        done |= token == SEP
        if done.all():
            break
    return tokens


def test_logits_match_pytorch(hf_model, captioner, images, full_logits):
    model, variables = captioner
    sizes = (model.image["hidden_size"], model.text["hidden_size"], model.text["vocab_size"])
    assert sizes == (48, 32, 99)
    rng = np.random.default_rng(1)
    ids = rng.integers(4, HF_TINY_TEXT["vocab_size"], size=(BATCH, MAX_LEN)).astype(np.int32)
    ids[:, : len(PROMPT)] = PROMPT
    mask = (np.arange(MAX_LEN)[None] < np.array([15, 4, 9, 12])[:, None]).astype(np.int32)
    ids *= mask
    ours = np.asarray(full_logits(variables, images, ids, mask))
    with torch.no_grad():
        ref = hf_model(
            pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2),
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long(),
        ).logits.numpy()
    assert ours.shape == ref.shape == (BATCH, MAX_LEN, HF_TINY_TEXT["vocab_size"])
    err = np.abs((ours - ref) * mask[..., None]).max()
    # The next-token logits after the prompt alone (row 1 is just the prompt).
    next_err = np.abs(ours[1, len(PROMPT) - 1] - ref[1, len(PROMPT) - 1]).max()
    print(f"captioner logits: max abs difference {err:.1e} (after the prompt: {next_err:.1e})")
    assert np.abs(ref).max() > 1.0  # logits of order 1, not near zero
    assert err < TOL


def test_cached_logits_equal_full_forward(captioner, images, full_logits):
    model, variables = captioner
    ids = np.random.default_rng(2).integers(4, HF_TINY_TEXT["vocab_size"], size=(BATCH, MAX_LEN))
    ids = ids.astype(np.int32)
    ids[:, : len(PROMPT)] = PROMPT

    @jax.jit
    def cached(variables, images, ids):
        """The prompt in one step, then one token per step, with the key/value cache."""
        params = {"params": variables["params"]}
        image_tokens = model.apply(params, images, method="encode_image")
        cache = init_cache(model, BATCH, MAX_LEN)
        first, updated = model.apply(
            {**params, "cache": cache},
            ids[:, : len(PROMPT)],
            image_tokens,
            method="decode_step",
            mutable=["cache"],
        )

        def one(cache, token):
            logits, updated = model.apply(
                {**params, "cache": cache}, token[:, None], method="decode_step", mutable=["cache"]
            )
            return updated["cache"], logits[:, 0]

        _, rest = jax.lax.scan(one, updated["cache"], ids[:, len(PROMPT) :].T)
        return jnp.concatenate([first, rest.transpose(1, 0, 2)], axis=1)

    ours = np.asarray(cached(variables, images, ids))
    full = np.asarray(full_logits(variables, images, ids, np.ones_like(ids)))
    err = np.abs(ours - full).max()
    print(f"cached vs full logits: max abs difference {err:.1e}")
    assert err < 1e-5


@pytest.mark.parametrize("extra", [0.0, 3.0])
def test_cached_greedy_equals_rerunning_the_sequence(captioner, images, full_logits, extra):
    variables = sep_bias(captioner[1], extra)
    for prompt in (PROMPT, np.array([DEC, 60, 61, 7], np.int32), np.array([DEC], np.int32)):
        tokens, lengths = run(captioner, images, variables, prompt=prompt)
        reference = greedy_by_rerunning(full_logits, variables, images, prompt)
        np.testing.assert_array_equal(tokens, reference)
        assert_well_formed(tokens, lengths, prompt)


@pytest.mark.parametrize("extra", [0.0, 3.0])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_greedy_and_beam_search_match_pytorch_generate(
    hf_model, captioner, images, extra, num_beams
):
    variables = sep_bias(captioner[1], extra)
    strategy = "greedy" if num_beams == 1 else "beam"
    tokens, lengths = run(captioner, images, variables, strategy=strategy, num_beams=num_beams)
    reference = hf_generate(hf_sep_bias(hf_model, extra), images, num_beams=num_beams)
    np.testing.assert_array_equal(lengths, lengths_of(reference))
    for ours, ref, length in zip(tokens, reference, lengths, strict=True):
        np.testing.assert_array_equal(ours[:length], ref[:length])
    assert_well_formed(tokens, lengths)
    if extra:  # the [SEP] bias ends some captions, not all
        assert lengths.min() < MAX_LEN and len(set(lengths.tolist())) > 1


def test_greedy_equals_top_k_1(captioner, images):
    greedy, _ = run(captioner, images)
    for seed, temperature in ((0, 1.0), (1, 0.7)):
        sampled, _ = run(
            captioner,
            images,
            strategy="top_k",
            top_k=1,
            temperature=temperature,
            rng=jax.random.key(seed),
        )
        np.testing.assert_array_equal(sampled, greedy)


def test_sampling_is_seeded_and_stays_in_the_filter(captioner, images, full_logits):
    variables = captioner[1]
    key = jax.random.key(42)
    first, lengths = run(captioner, images, strategy="top_k", top_k=50, rng=key)
    again, _ = run(captioner, images, strategy="top_k", top_k=50, rng=key)
    other, _ = run(captioner, images, strategy="top_k", top_k=50, rng=jax.random.key(43))
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()
    assert_well_formed(first, lengths)

    def allowed_sets(tokens, keep):
        logits = np.array(full_logits(variables, images, tokens, np.ones_like(tokens)))
        logits[:, : MIN_LEN - 1, SEP] = -np.inf  # position i - 1 predicts token i
        return [[keep(logits[b, i - 1]) for i in range(len(PROMPT), MAX_LEN)] for b in range(BATCH)]

    def check(tokens, lengths, keep):
        sets = allowed_sets(tokens, keep)
        for b in range(BATCH):
            for i in range(len(PROMPT), lengths[b]):
                assert tokens[b, i] in sets[b][i - len(PROMPT)], (b, i)

    top3 = lambda logits: set(np.argsort(-logits)[:3].tolist())
    tokens, lengths = run(captioner, images, strategy="top_k", top_k=3, rng=key)
    check(tokens, lengths, top3)

    def nucleus(logits, p=0.5, temperature=0.7):
        z = logits / temperature
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        before = np.cumsum(probs[order]) - probs[order]
        return set(order[before < p].tolist())

    tokens, lengths = run(captioner, images, strategy="top_p", top_p=0.5, temperature=0.7, rng=key)
    assert_well_formed(tokens, lengths)
    check(tokens, lengths, nucleus)


def test_min_length_and_padding_for_every_strategy(captioner, images):
    # A large [SEP] bias: [SEP] wins as soon as it is allowed, at position MIN_LEN.
    variables = sep_bias(captioner[1], 30.0)
    for kwargs in (
        dict(strategy="greedy"),
        dict(strategy="top_k", top_k=50, rng=jax.random.key(0)),
        dict(strategy="top_p", top_p=0.9, rng=jax.random.key(0)),
        dict(strategy="beam", num_beams=3),
    ):
        tokens, lengths = run(captioner, images, variables, **kwargs)
        assert_well_formed(tokens, lengths)
        np.testing.assert_array_equal(lengths, MIN_LEN + 1, err_msg=str(kwargs))
        assert (tokens[:, MIN_LEN] == SEP).all() and (tokens[:, MIN_LEN + 1 :] == PAD).all()


def test_filter_logits_hand_made():
    probs = [[0.05, 0.5, 0.15, 0.3], [0.4, 0.1, 0.2, 0.3], [0.25, 0.25, 0.25, 0.25]]
    logits = jnp.log(jnp.array(probs))
    kept = lambda k, p: np.isfinite(np.asarray(decoding.filter_logits(logits, k, p, 1.0)))
    # top-k: ties with the k-th logit are kept (HF's rule).
    np.testing.assert_array_equal(kept(2, 1.0), [[0, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]])
    # top-p: tokens whose more probable tokens hold less than p; at least one.
    np.testing.assert_array_equal(kept(0, 0.75), [[0, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(kept(0, 0.85), [[0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(kept(0, 0.1), [[0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(kept(2, 0.85), [[0, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(kept(0, 1.0), np.ones((3, 4)))
    # Temperature scales before the filters: a low one concentrates the nucleus.
    cold = np.isfinite(np.asarray(decoding.filter_logits(logits, 0, 0.75, 0.2)))
    np.testing.assert_array_equal(cold[:2], [[0, 1, 0, 0], [1, 0, 0, 0]])


def test_decode_refuses_bad_settings(captioner, images):
    with pytest.raises(ValueError, match="strategy"):
        run(captioner, images, strategy="nucleus")
    with pytest.raises(ValueError, match="rng"):
        run(captioner, images, strategy="top_k")
    with pytest.raises(ValueError, match="prompt_ids"):
        run(captioner, images, prompt=np.arange(MAX_LEN, dtype=np.int32))
    with pytest.raises(ValueError, match="max_text_len"):
        init_cache(captioner[0], BATCH, HF_TINY_TEXT["max_position_embeddings"] + 1)


def test_parameter_count_equals_pytorch(hf_model, captioner):
    # PyTorch counts the tied LM head matrix once, as we hold it.
    assert count(captioner[1]["params"]) == sum(p.numel() for p in hf_model.parameters())


def test_import_errors_are_user_errors(captioner, hf_folder, tmp_path):
    model, _ = captioner
    state_dict = read_hf_state_dict(hf_folder)

    key = "text_decoder.bert.encoder.layer.1.crossattention.self.key.weight"
    missing = {k: v for k, v in state_dict.items() if k != key}
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        captioner_params_from_state_dict(missing, model)

    key = "text_decoder.cls.predictions.transform.dense.weight"
    wrong = {**state_dict, key: np.zeros((32, 31), np.float32)}
    with pytest.raises(UserError, match=key.replace(".", r"\.") + r"' has shape \(32, 31\)"):
        captioner_params_from_state_dict(wrong, model)

    embedding = state_dict["text_decoder.bert.embeddings.word_embeddings.weight"]
    untied = {**state_dict, "text_decoder.cls.predictions.decoder.weight": embedding + 1.0}
    with pytest.raises(UserError, match="ties the LM head"):
        captioner_params_from_state_dict(untied, model)
    tied = {**state_dict, "text_decoder.cls.predictions.decoder.weight": embedding}
    captioner_params_from_state_dict(tied, model)  # a checkpoint that stores the copy loads

    with pytest.raises(UserError, match="does not exist"):
        captioner_from_hf(tmp_path / "nowhere")
    with pytest.raises(UserError, match="config"):
        captioner_from_hf(tmp_path)


def test_read_init_variables(hf_folder, captioner):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    variables, meta = read_init_variables(hf_folder, "best", sharding=sharding)
    assert meta["step"] == 0
    leaves = jax.tree.leaves(variables["params"])
    assert all(x.sharding == sharding for x in leaves)
    assert count(variables["params"]) == count(captioner[1]["params"])
