"""The concept probe: scores how well generated images show the concepts they were asked for.

Three linear heads (shape, colour, size; 2-way each) on the raw [0, 1] pixels, trained on real
images of all eight codes of the `concepts` data. A generated sample of code 'abc' scores the
fraction of the three heads that predict its bits; `acc_<code>` is that fraction averaged over
the code's samples, and `seen_acc` / `unseen_acc` average it over the seen / unseen codes.

The probe is trained once per probe config and data (`train_or_load_probe`) and cached in the
run's `probe/` folder (its parameters and the config they were trained with).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dllab_jax import checkpoint as ckpt_lib
from dllab_jax import data as data_lib
from dllab_jax.data.procedural import concept_codes as concepts_lib
from dllab_jax.evaluators import Evaluation

# The order of the probe's heads and of a code's bits.
CONCEPT_NAMES: tuple[str, ...] = ("shape", "colour", "size")


def probe_accuracy(predictions: np.ndarray, code: str) -> float:
    """Fraction of (sample, concept) pairs whose prediction equals the code's bit.

    Args:
      predictions: [n, 3] int, the probe's (shape, colour, size) predictions for n samples
        generated for `code`.
      code: the code they were generated for, e.g. '011'.
    """
    bits = np.asarray(concepts_lib.code_bits(code))
    predictions = np.asarray(predictions).reshape(-1, len(bits))
    return float(np.mean(predictions == bits[None, :]))


def seen_unseen_accuracy(
    per_code: Mapping[str, float], seen: Sequence[str], unseen: Sequence[str]
) -> dict[str, float]:
    """{'seen_acc', 'unseen_acc'}: the plain means of `per_code` over each group (NaN if
    a group is empty)."""

    def mean(codes):
        return float(np.mean([per_code[c] for c in codes])) if codes else float("nan")

    return {"seen_acc": mean(seen), "unseen_acc": mean(unseen)}


def probe_logits(params, images: jnp.ndarray) -> jnp.ndarray:
    """[n, H, W, 3] images in [0, 1] -> [n, 3, 2] logits of the three linear heads."""
    flat = images.reshape(images.shape[0], -1).astype(jnp.float32)
    return (flat @ params["kernel"] + params["bias"]).reshape(-1, len(CONCEPT_NAMES), 2)


def concept_bits(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """[n, 3] int32 (shape, colour, size) bits of a source's arrays."""
    return np.stack([arrays["shape"], arrays["colour_bit"], arrays["size_bit"]], -1)


@functools.partial(jax.jit, static_argnames=("steps",))
def _train_probe(images, bits, rng, *, steps: int, learning_rate: float):
    """Full-batch Adam on the summed softmax cross-entropies of the three heads."""
    dim = int(np.prod(images.shape[1:]))
    params = {
        # Small random weights: zero would do too (a convex problem), but this is the
        # usual init and keeps the first steps' logits informative.
        "kernel": 1e-3 * jax.random.normal(rng, (dim, 2 * len(CONCEPT_NAMES)), jnp.float32),
        "bias": jnp.zeros((2 * len(CONCEPT_NAMES),), jnp.float32),
    }
    tx = optax.adam(learning_rate)

    def loss_fn(p):
        logits = probe_logits(p, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, bits).mean()

    def step(carry, _):
        p, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params, losses


_predict_probe = jax.jit(lambda params, images: jnp.argmax(probe_logits(params, images), -1))


def _probe_data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The run's data config with all eight codes in every split and the probe's own seed
    and sizes, so the probe sees real images of the unseen codes too."""
    data = config.data.to_dict()
    codes = concepts_lib.ALL_CODES
    data.update(
        codes=codes,
        train_codes=codes,
        eval_codes=codes,
        seed=config.probe.seed,
        num_train=config.probe.num_train,
        num_test=config.probe.num_test,
    )
    return ml_collections.ConfigDict(data)


def train_or_load_probe(config: ml_collections.ConfigDict, directory: Path) -> tuple[dict, dict]:
    """The probe's parameters and real-image metrics, cached in `directory`.

    The cache is `directory/params.msgpack` (flax.serialization) beside `directory/probe.json`,
    which holds the probe config and data config it was trained with and its metrics; it is
    reused only when both configs match.

    Returns:
      (params {'kernel': [H*W*3, 6], 'bias': [6]}, {'real_acc', 'real_acc_<concept>'}).
    """
    data_config = _probe_data_config(config)
    identity = {"probe": config.probe.to_dict(), "data": data_config.to_dict()}
    identity = json.loads(json.dumps(identity, default=list))  # tuples as JSON lists
    params_path, meta_path = directory / "params.msgpack", directory / "probe.json"
    if params_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("identity") == identity:
            dim = int(np.prod(meta["image_shape"]))
            target = {
                "kernel": np.zeros((dim, 2 * len(CONCEPT_NAMES)), np.float32),
                "bias": np.zeros((2 * len(CONCEPT_NAMES),), np.float32),
            }
            params = flax.serialization.from_bytes(target, params_path.read_bytes())
            return params, meta["metrics"]

    train = data_lib.get_source(data_config, "train")
    test = data_lib.get_source(data_config, "test")
    train_arrays = train.get(np.arange(len(train)))
    test_arrays = test.get(np.arange(len(test)))
    params, _ = _train_probe(
        concepts_lib.to_unit(train_arrays["image"]),
        concept_bits(train_arrays),
        jax.random.key(config.probe.seed),
        steps=int(config.probe.steps),
        learning_rate=float(config.probe.learning_rate),
    )
    params = jax.device_get(params)
    predictions = np.asarray(_predict_probe(params, concepts_lib.to_unit(test_arrays["image"])))
    correct = predictions == concept_bits(test_arrays)
    metrics = {"real_acc": float(correct.mean())}
    for i, name in enumerate(CONCEPT_NAMES):
        metrics[f"real_acc_{name}"] = float(correct[:, i].mean())

    directory.mkdir(parents=True, exist_ok=True)
    params_path.write_bytes(flax.serialization.to_bytes(params))
    meta = {
        "identity": identity,
        "image_shape": list(train.info.image_shape),
        "metrics": metrics,
    }
    ckpt_lib.write_json(meta_path, meta)
    return params, metrics


def score_samples(
    params, samples: Mapping[str, np.ndarray], seen: Sequence[str], unseen: Sequence[str]
) -> dict[str, float]:
    """{acc_<code>, acc_<code>_<concept>, seen_acc, unseen_acc} of generated samples.

    Args:
      params: the probe's parameters (`train_or_load_probe`).
      samples: code -> [n, H, W, 3] float images in [0, 1] generated for that code.
      seen, unseen: the codes `seen_acc` and `unseen_acc` average over.
    """
    out, per_code = {}, {}
    for code, images in samples.items():
        predictions = np.asarray(_predict_probe(params, images))
        per_code[code] = probe_accuracy(predictions, code)
        out[f"acc_{code}"] = per_code[code]
        # Which concept the model gets wrong is the interesting part for unseen codes.
        bits = np.asarray(concepts_lib.code_bits(code))
        for i, name in enumerate(CONCEPT_NAMES):
            out[f"acc_{code}_{name}"] = float(np.mean(predictions[:, i] == bits[i]))
    out.update(seen_unseen_accuracy(per_code, seen, unseen))
    return out


def finalize(
    config: ml_collections.ConfigDict,
    samples: Mapping[str, np.ndarray],
    directory: Path,
    seen: Sequence[str],
    unseen: Sequence[str],
) -> Evaluation:
    """Probes generated samples with the probe of `config.probe` (cached in `directory`).

    Returns:
      Evaluation with metrics {real_acc, real_acc_<concept>} (the probe on real test images:
      if it failed, the sample scores would mean nothing) and `score_samples`'s, and no
      artifacts.
    """
    params, real = train_or_load_probe(config, Path(directory))
    return Evaluation({**real, **score_samples(params, samples, seen, unseen)}, {})
