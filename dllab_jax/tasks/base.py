"""What a task is: the pieces of one experiment family that the generic loop plugs in.

The loop in `dllab_jax.train` owns the state, the optimiser, the steps, the devices,
checkpoints and logs. A task owns what differs between experiments: which data, which model,
the loss, the evaluation metrics and the report figures. A new experiment is a new subclass
(and a config), never a new loop.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dllab_jax import data as data_lib
from dllab_jax import metrics as metrics_lib
from dllab_jax import models, parallel
from dllab_jax.data.pipeline import Augment
from dllab_jax.evaluators import Evaluation


def normalize_images(images: jnp.ndarray, mean, std) -> jnp.ndarray:
    """uint8 [B, H, W, C] -> float32, scaled to [0, 1] then standardised per channel."""
    images = images.astype(jnp.float32) / 255.0
    return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


class Task:
    """Base class: subclasses implement `loss`, and `eval_step` with `finalize` (or their own
    `evaluate`); they may override `dummy_fields`, `model_images`, `init_inputs`,
    `model_kwargs`, `evaluate_run`, `report`, `prepare`, `source` and `augment`.

    Evaluation holds no state: `evaluate` returns a split's metrics and report artifacts
    (`evaluators.Evaluation`), `evaluate_run` what is measured once per run, and the loop
    hands both to `report`, which only draws."""

    # Metric names (without split prefix) drawn as train/val curves in `curves.png`.
    curve_metrics: tuple[str, ...] = ("loss",)
    # Examples of each split's first batch whose inputs and `eval_step` outputs the report
    # draws (0: none).
    num_report_examples: int = 0

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self._sources: dict[str, data_lib.Source] = {}

    def prepare(self, workdir) -> None:
        """Called once before anything else with the run's workdir: make or load run artifacts
        that the data or model need (a tokenizer, say). Default: nothing."""

    # ----------------------------------------------------------------- data
    def source(self, split: str) -> data_lib.Source:
        """The data source of a split ('train', 'val', 'test'), built once."""
        if split not in self._sources:
            self._sources[split] = data_lib.get_source(self.config.data, split)
        return self._sources[split]

    def augment(self) -> Augment | None:
        """Training-time augmentation of host batches (None: none)."""
        return None

    # ---------------------------------------------------------------- model
    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments the task decides, not the user (e.g. `num_classes`)."""
        return {}

    def build_model(self) -> nn.Module:
        """The module named by `config.model` (see `dllab_jax.models.build_model`)."""
        return models.build_model(self.config.model, **self.model_kwargs())

    def model_spec(self) -> dict[str, Any]:
        """The model's registry name and constructor arguments, stored with checkpoints so
        `load_run` can rebuild the module without the task."""
        kwargs = {k: v for k, v in self.config.model.to_dict().items() if k != "name"}
        return {"name": self.config.model.name, "kwargs": {**kwargs, **self.model_kwargs()}}

    def model_images(self, batch: dict) -> jnp.ndarray:
        """The model's image input of a batch: uint8 [B, H, W, C] -> float32, standardised
        with `config.data.mean` / `std`."""
        return normalize_images(batch["image"], self.config.data.mean, self.config.data.std)

    def init_inputs(self, batch: dict) -> tuple:
        """The positional inputs of `model.init` for a (dummy) batch (default: the images)."""
        return (self.model_images(batch),)

    def dummy_fields(self, batch_size: int, image_size: tuple[int, int]) -> dict[str, np.ndarray]:
        """The fields of `dummy_batch` beside `image` (default: none)."""
        return {}

    def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """A batch of the right shapes and dtypes (zeros) for init and benchmarks: `image`
        [B, H, W, C] uint8 of the training source's shape, and `dummy_fields`."""
        height, width, channels = self.source("train").info.image_shape
        return {
            "image": np.zeros((batch_size, height, width, channels), np.uint8),
            **self.dummy_fields(batch_size, (height, width)),
        }

    # ------------------------------------------------------------- training
    def loss(
        self, model: nn.Module, params, model_state: dict, batch: dict, rng: jax.Array
    ) -> tuple[jnp.ndarray, tuple[dict[str, jnp.ndarray], dict]]:
        """Training loss of one batch.

        Returns:
          (loss, (metrics, new_model_state)): metrics are scalars averaged over the batch.
        """
        raise NotImplementedError

    # ----------------------------------------------------------- evaluation
    def eval_step(
        self, model: nn.Module, variables: dict, batch: dict
    ) -> tuple[dict[str, jnp.ndarray], dict[str, jnp.ndarray]]:
        """One evaluation batch under jit.

        Returns:
          (sums, outputs): sums and counts over the real examples (`batch['batch_mask']`),
          summed over the split; outputs are per-example arrays [B, ...] of which the report
          draws the first `num_report_examples` ({} when it draws none).
        """
        raise NotImplementedError

    def finalize(self, sums: dict) -> Evaluation:
        """Metrics and report artifacts of a whole split from its summed `eval_step` sums
        (one of `dllab_jax.evaluators`)."""
        raise NotImplementedError

    @functools.cached_property
    def _jitted_eval_step(self):
        return jax.jit(self.eval_step, static_argnums=0)

    def evaluate(
        self, model: nn.Module, variables: dict, split: str, batches: Iterable[dict], place
    ) -> Evaluation:
        """Metrics of one split and the artifacts its report draws; the first examples'
        inputs and outputs (if `num_report_examples`) are the artifact `examples`.

        Args:
          model: the module.
          variables: {'params': ..., **model_state}, replicated on the mesh.
          split: the split's name.
          batches: the split's padded host batches (see `pipeline.eval_batches`).
          place: puts a host batch on the devices (sharded along the batch).
        """
        total, examples = None, {}
        for batch in batches:
            sums, outputs = self._jitted_eval_step(model, variables, place(batch))
            total = metrics_lib.add_sums(total, sums)
            if self.num_report_examples and not examples:
                n = min(self.num_report_examples, int(batch["batch_mask"].sum()))
                outputs = parallel.to_host(outputs)
                examples = {k: np.asarray(v)[:n] for k, v in {**batch, **outputs}.items()}
        evaluation = self.finalize(total)
        if examples:
            evaluation.artifacts["examples"] = examples
        return evaluation

    def evaluate_run(self, model: nn.Module, variables: dict, workdir, place) -> Evaluation:
        """Evaluations made once per run, after the splits', on the state the report draws
        (samples generated and scored, say). Their metrics join the summary as they are (no
        split prefix). Default: none."""
        return Evaluation({}, {})

    # --------------------------------------------------------------- report
    def report(self, split_artifacts: Mapping[str, dict], run_artifacts: dict, workdir) -> None:
        """Writes the task's figures into `workdir` at the end of a run (default: none).

        Args:
          split_artifacts: split -> the artifacts of its final evaluation (`evaluate`).
          run_artifacts: the artifacts of `evaluate_run`.
          workdir: the run's folder.
        """
