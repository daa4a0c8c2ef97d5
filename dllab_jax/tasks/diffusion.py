"""E5 diffusion with composable conditioning (Freiburg DL Lab 2025; Okawa et al. 2023).

A concept-conditioned DDPM (`ContextUnet`, the linear schedule of `dllab_jax.diffusion`) is
trained on the seen codes of the `concepts` data (one coloured shape; shape, colour and size
bits) and asked at the end to draw every one of the eight codes, the unseen compositions
included. The end-of-run evaluation (`evaluate_run`) measures how well it composes with a *probe*
(`dllab_jax.evaluators.concept_probe`): three linear heads (shape, colour, size; 2-way each) on
the raw [0, 1] pixels, trained on real images of all eight codes. A generated sample of code
'abc' scores the fraction of the three heads that predict its bits; `probe/acc_<code>` is that
fraction averaged over the code's samples, and `probe/seen_acc` / `probe/unseen_acc` average it
over `config.evaluation.seen_codes` / `unseen_codes`.

Batches (from `concepts` or `concepts_folder`) hold `image` [B, H, W, 3] uint8 and the raw
concept values the network is conditioned on: `shape_onehot` [B, 2], `colour` [B, 3] RGB and
`size` [B] (normalised half side). Sampling conditions on each code's *nominal* values (the
exact RGB of its colour, the unjittered size), which are what an unseen code can only be
described by.

Run artifacts beyond the loop's: `samples.png` (one row per code), `mean_images.png` (the
mean sample per code) and `probe/` (the probe's parameters and the config they were trained
with; a later run with the same probe config and data reuses them).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax import diffusion, parallel, registry
from dllab_jax.data.procedural import concept_codes as concepts_lib
from dllab_jax.errors import UserError
from dllab_jax.evaluators import Evaluation, concept_probe
from dllab_jax.tasks.base import Task

# The model's concept inputs, in the order of `concept_probe.CONCEPT_NAMES` (a code's bits).
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

    def dummy_fields(self, batch_size, image_size):
        return {
            "shape_onehot": np.zeros((batch_size, 2), np.float32),
            "colour": np.zeros((batch_size, 3), np.float32),
            "size": np.zeros((batch_size,), np.float32),
        }

    def init_inputs(self, batch):
        images = self.model_images(batch)
        return images, jnp.ones((images.shape[0],), jnp.float32), batch_concepts(batch)

    def model_images(self, batch) -> jnp.ndarray:
        """uint8 images -> float32 in the model's range [-1, 1]."""
        return diffusion.to_model_range(jnp.asarray(batch["image"], jnp.float32) / 255.0)

    # --------------------------------------------------------------------- training
    def _noised(self, batch, rng):
        """(x_t, t / T, noise) for a batch: t uniform on 1..T."""
        x0 = self.model_images(batch)
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
    def eval_step(self, model, variables, batch):
        # A fixed key: every evaluation draws the same t and noise per batch position, so
        # successive validation losses differ only through the model.
        x_t, t_over_T, noise = self._noised(batch, jax.random.key(0))
        eps = model.apply(variables, x_t, t_over_T, batch_concepts(batch), train=False)
        per_example = jnp.mean(jnp.square(eps - noise), axis=(1, 2, 3))
        mask = batch["batch_mask"]
        return {"loss_sum": jnp.sum(per_example * mask), "count": jnp.sum(mask)}, {}

    def finalize(self, sums):
        loss = float(sums["loss_sum"]) / max(float(sums["count"]), 1.0)
        return Evaluation({"loss": loss}, {})

    # -------------------------------------------------------------- sampling, probe
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
            samples[code] = np.asarray(parallel.to_host(compiled(variables, concepts, rng)))
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

    def evaluate_run(self, model, variables, workdir, place):
        """Samples every code with `variables` (the EMA when the run keeps one) and probes
        them: the `sampling/*` and `probe/*` metrics; the samples are the artifacts."""
        samples, timings = self.generate(model, variables, place)
        seen, unseen = self.seen_codes, self.unseen_codes
        probe = concept_probe.finalize(
            self.config, samples, Path(workdir) / PROBE_DIR, seen, unseen
        )
        metrics = {f"sampling/{k}": v for k, v in timings.items()}
        metrics.update({f"probe/{k}": v for k, v in probe.metrics.items()})
        # Figures list the seen codes first, then the unseen ones, then any others.
        order = list(dict.fromkeys([*seen, *unseen, *samples]))
        return Evaluation(metrics, {"samples": {c: samples[c] for c in order if c in samples}})

    def report(self, split_artifacts, run_artifacts, workdir):
        """`samples.png` and `mean_images.png` of `evaluate_run`'s samples."""
        from dllab_jax import plots

        samples, seen = run_artifacts["samples"], self.seen_codes
        plots.concept_samples(samples, seen, Path(workdir) / "samples.png", NUM_FIGURE_SAMPLES)
        plots.concept_mean_images(samples, seen, Path(workdir) / "mean_images.png")
