"""E5 diffusion with composable conditioning (Freiburg DL Lab 2025; Okawa et al. 2023).

A concept-conditioned DDPM (`ContextUnet`, the linear schedule of `dllab_jax.diffusion`) is
trained on the seen codes of the `concepts` data (one coloured shape; shape, colour and size
bits) and asked at the end to draw every one of the eight codes, the unseen compositions
included. The report measures how well it composes with a *probe*: three linear heads (shape,
colour, size; 2-way each) on the raw [0, 1] pixels, trained on real images of all eight codes.
A generated sample of code 'abc' scores the fraction of the three heads that predict its bits;
`probe/acc_<code>` is that fraction averaged over the code's samples, and `probe/seen_acc` /
`probe/unseen_acc` average it over `config.evaluation.seen_codes` / `unseen_codes`.

Batches (from `concepts` or `concepts_folder`) hold `image` [B, H, W, 3] uint8 and the raw
concept values the network is conditioned on: `shape_onehot` [B, 2], `colour` [B, 3] RGB and
`size` [B] (normalised half side). Sampling conditions on each code's *nominal* values (the
exact RGB of its colour, the unjittered size), which are what an unseen code can only be
described by.

Run artifacts beyond the loop's: `samples.png` (one row per code), `mean_images.png` (the
mean sample per code) and `probe/` (the probe's parameters and the config they were trained
with; a later report with the same probe config and data reuses them).
"""

from __future__ import annotations

import functools
import json
import time
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
from dllab_jax import diffusion, registry
from dllab_jax.data import concepts as concepts_lib
from dllab_jax.errors import UserError
from dllab_jax.tasks.base import Task

# The order of the probe's heads, of a code's bits and of the model's concept inputs.
CONCEPT_NAMES: tuple[str, ...] = ("shape", "colour", "size")
CONCEPT_DIMS: tuple[int, ...] = (2, 3, 1)
NUM_FIGURE_SAMPLES = 8  # samples per code (row) in samples.png
PROBE_DIR = "probe"


# ------------------------------------------------------------------ conditioning
def batch_concepts(batch: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray, ...]:
    """The model's concept inputs of a data batch: ([B, 2], [B, 3], [B, 1]) float32."""
    return (
        jnp.asarray(batch["shape_onehot"], jnp.float32),
        jnp.asarray(batch["colour"], jnp.float32),
        jnp.asarray(batch["size"], jnp.float32).reshape(-1, 1),
    )


def code_concepts(code: str, n: int) -> tuple[np.ndarray, ...]:
    """The nominal concept inputs of `code`, repeated n times: ([n, 2], [n, 3], [n, 1]).

    The size is normalised as the sources do (half side / (min(H, W) / 2)); the pixel
    constants scale with the image, so this is the same at every resolution.
    """
    shape, colour, size = concepts_lib.code_bits(code)
    size_norm = concepts_lib.SIZES[size] / (concepts_lib.REFERENCE_SIZE / 2.0)
    return (
        np.tile(np.eye(2, dtype=np.float32)[shape], (n, 1)),
        np.tile(np.asarray(concepts_lib.COLOURS[colour], np.float32), (n, 1)),
        np.full((n, 1), size_norm, np.float32),
    )


# -------------------------------------------------------------------------- probe
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


# ------------------------------------------------------------------------ figures
def _code_label(code: str, seen: Sequence[str]) -> str:
    return f"{code} ({'seen' if code in seen else 'unseen'})"


def samples_figure(samples: Mapping[str, np.ndarray], seen: Sequence[str], path) -> None:
    """One row per code of its first samples.

    Args:
      samples: code -> [n, H, W, 3] float images in [0, 1].
      seen: codes labelled 'seen' (the others 'unseen').
      path: the PNG to write.
    """
    import matplotlib.pyplot as plt

    from dllab_jax import plots  # noqa: F401  (selects the Agg backend)

    codes = list(samples)
    cols = min(NUM_FIGURE_SAMPLES, min(len(v) for v in samples.values()))
    fig, axes = plt.subplots(
        len(codes), cols, figsize=(1.1 * cols + 1.6, 1.1 * len(codes)), squeeze=False
    )
    for row, code in enumerate(codes):
        for col in range(cols):
            ax = axes[row, col]
            ax.imshow(np.clip(samples[code][col], 0.0, 1.0))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(_code_label(code, seen), rotation=0, ha="right", va="center")
    fig.suptitle("generated samples (shape, colour, size bits)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def mean_images_figure(samples: Mapping[str, np.ndarray], seen: Sequence[str], path) -> None:
    """A row of the mean generated image of each code; titles say seen / unseen."""
    import matplotlib.pyplot as plt

    from dllab_jax import plots  # noqa: F401  (selects the Agg backend)

    codes = list(samples)
    fig, axes = plt.subplots(1, len(codes), figsize=(1.5 * len(codes), 2.0), squeeze=False)
    for ax, code in zip(axes[0], codes, strict=True):
        ax.imshow(np.clip(samples[code].mean(axis=0), 0.0, 1.0))
        ax.set_title(_code_label(code, seen).replace(" ", "\n"), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("mean generated image per code")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- task
@registry.tasks.register("diffusion")
class DiffusionTask(Task):
    """DDPM training on concept images; the report samples every code and probes them."""

    curve_metrics = ("loss",)

    def __init__(self, config):
        super().__init__(config)
        d = config.diffusion
        self.schedule = diffusion.linear_schedule(d.T, d.beta1, d.beta2)
        if d.sampler not in ("ancestral", "ddim"):
            raise UserError(
                f"config.diffusion.sampler must be 'ancestral' or 'ddim', got {d.sampler!r}"
            )
        if d.sampler == "ddim" and not 1 <= d.ddim_steps <= d.T:
            raise UserError(f"config.diffusion.ddim_steps={d.ddim_steps} must be in 1..T={d.T}")
        if d.guidance_weight and not config.model.null_concepts:
            raise UserError(
                "config.diffusion.guidance_weight != 0 needs config.model.null_concepts=True "
                "(classifier-free guidance needs the unconditional model)"
            )

    # ------------------------------------------------------------- groups of codes
    @property
    def seen_codes(self) -> tuple[str, ...]:
        return concepts_lib.parse_codes(self.config.evaluation.seen_codes, "seen_codes")

    @property
    def unseen_codes(self) -> tuple[str, ...]:
        return concepts_lib.parse_codes(self.config.evaluation.unseen_codes, "unseen_codes")

    # ----------------------------------------------------------------------- model
    def model_kwargs(self):
        height, width, channels = self.source("train").info.image_shape
        if height != width:
            raise UserError(f"ContextUnet needs square images; the data has {height}x{width}")
        return {"concept_dims": CONCEPT_DIMS, "image_size": height, "in_channels": channels}

    def dummy_batch(self, batch_size):
        height, width, channels = self.source("train").info.image_shape
        return {
            "image": np.zeros((batch_size, height, width, channels), np.uint8),
            "shape_onehot": np.zeros((batch_size, 2), np.float32),
            "colour": np.zeros((batch_size, 3), np.float32),
            "size": np.zeros((batch_size,), np.float32),
        }

    def init_inputs(self, batch):
        images = self._images(batch)
        return images, jnp.ones((images.shape[0],), jnp.float32), batch_concepts(batch)

    @staticmethod
    def _images(batch) -> jnp.ndarray:
        return diffusion.to_model_range(jnp.asarray(batch["image"], jnp.float32) / 255.0)

    # --------------------------------------------------------------------- training
    def _noised(self, batch, rng):
        """(x_t, t / T, noise) for a batch: t uniform on 1..T."""
        x0 = self._images(batch)
        t_rng, noise_rng = jax.random.split(rng)
        T = self.schedule.num_timesteps
        t = diffusion.sample_timesteps(t_rng, x0.shape[0], T)
        noise = jax.random.normal(noise_rng, x0.shape, jnp.float32)
        x_t = diffusion.q_sample(self.schedule, x0, t, noise)
        return x_t, t.astype(jnp.float32) / T, noise

    def loss(self, model, params, model_state, batch, rng):
        noise_rng, drop_rng = jax.random.split(rng)
        x_t, t_over_T, noise = self._noised(batch, noise_rng)
        concepts = batch_concepts(batch)
        drop_mask = None
        if self.config.model.null_concepts:
            # Each concept of each example is swapped for its null independently, so the
            # model learns every partial conditioning, the unconditional one included.
            drop_mask = jax.random.bernoulli(
                drop_rng,
                self.config.diffusion.concept_drop_prob,
                (x_t.shape[0], len(CONCEPT_DIMS)),
            )
        eps, new_model_state = model.apply(
            {"params": params, **model_state},
            x_t,
            t_over_T,
            concepts,
            drop_mask=drop_mask,
            train=True,
            mutable=list(model_state),
        )
        return diffusion.diffusion_loss(eps, noise), ({}, new_model_state)

    # ------------------------------------------------------------------- evaluation
    def eval_sums(self, model, variables, batch):
        # A fixed key: every evaluation draws the same t and noise per batch position, so
        # successive validation losses differ only through the model.
        x_t, t_over_T, noise = self._noised(batch, jax.random.key(0))
        eps = model.apply(variables, x_t, t_over_T, batch_concepts(batch), train=False)
        per_example = jnp.mean(jnp.square(eps - noise), axis=(1, 2, 3))
        mask = batch["batch_mask"]
        return {"loss_sum": jnp.sum(per_example * mask), "count": jnp.sum(mask)}

    def finalize(self, sums):
        return {"loss": float(sums["loss_sum"]) / max(float(sums["count"]), 1.0)}

    # ------------------------------------------------------------------------ report
    def _sampler(self, model, n: int, sharding):
        """A jitted (variables, concepts, rng) -> [n, H, W, C] samples in [0, 1]."""
        cfg = self.config.diffusion
        height, width, channels = self.source("train").info.image_shape
        shape = (n, height, width, channels)
        # A Python float: 0 lets the sampler skip the unconditional branch.
        weight = float(cfg.guidance_weight)

        def sample(variables, concepts, rng):
            def eps_fn(x, t_over_T, drop_mask):
                if sharding is not None:  # spread the samples over the devices
                    x = jax.lax.with_sharding_constraint(x, sharding)
                return model.apply(variables, x, t_over_T, concepts, drop_mask=drop_mask)

            if cfg.sampler == "ddim":
                x0 = diffusion.ddim_sample(
                    eps_fn,
                    self.schedule,
                    rng,
                    shape,
                    num_steps=int(cfg.ddim_steps),
                    eta=float(cfg.ddim_eta),
                    guidance_weight=weight,
                )
            else:
                x0 = diffusion.ancestral_sample(
                    eps_fn, self.schedule, rng, shape, guidance_weight=weight
                )
            return diffusion.from_model_range(x0)

        return jax.jit(sample)

    def generate(self, model, variables, place) -> tuple[dict[str, np.ndarray], dict]:
        """`config.evaluation.samples_per_code` samples of every code, one call per code.

        Returns:
          (code -> [n, H, W, C] float32 in [0, 1], timings {'compile_seconds',
          'seconds_per_code'}).
        """
        n = int(self.config.evaluation.samples_per_code)
        codes = concepts_lib.ALL_CODES
        leaf = jax.tree.leaves(variables)[0]
        num_devices = len(leaf.sharding.device_set) if isinstance(leaf, jax.Array) else 1
        # Shard the samples over the devices when they split evenly (else every device runs
        # all of them, which is only slower).
        if place is None or num_devices == 1 or n % num_devices:
            place = None
        sharding = place({"x": np.zeros((n,), np.float32)})["x"].sharding if place else None
        sampler = self._sampler(model, n, sharding)
        base = jax.random.key(self.config.evaluation.seed)

        def inputs(code):
            concepts = code_concepts(code, n)
            concepts = tuple(place({"c": c})["c"] for c in concepts) if place else concepts
            return concepts, jax.random.fold_in(base, concepts_lib.code_index(code))

        start = time.perf_counter()
        compiled = sampler.lower(variables, *inputs(codes[0])).compile()
        compile_seconds = time.perf_counter() - start
        samples, seconds = {}, []
        for code in codes:
            concepts, rng = inputs(code)
            start = time.perf_counter()
            samples[code] = np.asarray(jax.device_get(compiled(variables, concepts, rng)))
            seconds.append(time.perf_counter() - start)
        timings = {"compile_seconds": compile_seconds, "seconds_per_code": float(np.mean(seconds))}
        cfg = self.config.diffusion
        steps = cfg.ddim_steps if cfg.sampler == "ddim" else cfg.T
        print(
            f"sampling: {n} images per code in {timings['seconds_per_code']:.2f} s "
            f"({cfg.sampler}, {steps} steps, guidance {cfg.guidance_weight}); "
            f"compiled in {compile_seconds:.1f} s"
        )
        return samples, timings

    def report(self, model, variables, workdir, place):
        """Samples every code with `variables` (the EMA when the run keeps one), probes them
        and draws `samples.png` and `mean_images.png`; returns the `sampling/*` and `probe/*`
        metrics."""
        workdir = Path(workdir)
        samples, timings = self.generate(model, variables, place)
        out = {f"sampling/{k}": v for k, v in timings.items()}

        params, real = train_or_load_probe(self.config, workdir / PROBE_DIR)
        out.update({f"probe/{k}": v for k, v in real.items()})
        per_code = {}
        for code, images in samples.items():
            predictions = np.asarray(_predict_probe(params, images))
            per_code[code] = probe_accuracy(predictions, code)
            out[f"probe/acc_{code}"] = per_code[code]
            # Which concept the model gets wrong is the interesting part for unseen codes.
            bits = np.asarray(concepts_lib.code_bits(code))
            for i, name in enumerate(CONCEPT_NAMES):
                out[f"probe/acc_{code}_{name}"] = float(np.mean(predictions[:, i] == bits[i]))
        seen, unseen = self.seen_codes, self.unseen_codes
        groups = seen_unseen_accuracy(per_code, seen, unseen)
        out.update({f"probe/{k}": v for k, v in groups.items()})

        # Figures list the seen codes first, then the unseen ones, then any others.
        order = list(dict.fromkeys([*seen, *unseen, *samples]))
        ordered = {code: samples[code] for code in order if code in samples}
        samples_figure(ordered, seen, workdir / "samples.png")
        mean_images_figure(ordered, seen, workdir / "mean_images.png")
        return out
