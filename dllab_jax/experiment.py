"""What one run trains: the train state, the jitted train step, and `Experiment`, the model,
optimiser, mesh, data and evaluation of a config put together (`build_experiment`).

`dllab_jax.train` runs the loop over it; benchmarks and tests build one without training.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tempfile
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dllab_jax import distributed, optim, parallel, performance
from dllab_jax.data import pipeline
from dllab_jax.errors import UserError
from dllab_jax.tasks import get_task
from dllab_jax.tasks.base import Task


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; `tx` is static.

    Attributes:
      step: int32 scalar, the number of updates applied.
      params: the trainable (and frozen) parameters.
      model_state: the model's other collections, e.g. {'batch_stats': ...}; {} if none.
      opt_state: the optimiser's state.
      ema_params: exponential moving average of params ({} when `config.ema_decay` is 0).
    """

    step: jnp.ndarray
    params: Any
    model_state: Any
    opt_state: Any
    ema_params: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def eval_params(self):
        """The parameters to evaluate and sample with: the EMA when there is one."""
        return self.ema_params if jax.tree.leaves(self.ema_params) else self.params

    def variables(self) -> dict:
        return {"params": self.eval_params(), **self.model_state}


class TrainingDiverged(UserError):
    """The loss became NaN or inf."""


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


# ------------------------------------------------------------------ the step
def train_step(
    state: TrainState,
    batch: dict,
    *,
    task: Task,
    model: nn.Module,
    schedule,
    base_key: jax.Array,
    ema_decay: float,
) -> tuple[TrainState, dict]:
    """One update on a (global) batch; returns the new state and scalar metrics."""
    rng = jax.random.fold_in(base_key, state.step)

    def loss_fn(params):
        return task.loss(model, params, state.model_state, batch, rng)

    (loss, (metrics, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_decay:
        ema_params = jax.tree.map(
            lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params
        )
    metrics = dict(
        metrics,
        loss=loss,
        grad_norm=optax.global_norm(grads),
        learning_rate=schedule(state.step),
    )
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        model_state=new_model_state,
        opt_state=opt_state,
        ema_params=ema_params,
    )
    return new_state, metrics


# ------------------------------------------------------------ the run set-up
@dataclasses.dataclass
class Experiment:
    """A config made concrete: task, model, schedule lengths, mesh and an initial state."""

    config: ml_collections.ConfigDict
    task: Task
    model: nn.Module
    mesh: jax.sharding.Mesh
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    schedule: Any
    tx: optax.GradientTransformation
    abstract_state: TrainState
    init_state_fn: Any

    @functools.cached_property
    def jitted_train_step(self):
        step = functools.partial(
            train_step,
            task=self.task,
            model=self.model,
            schedule=self.schedule,
            base_key=jax.random.key(self.config.seed),
            ema_decay=self.config.ema_decay,
        )
        replicated = parallel.replicated(self.mesh)
        return jax.jit(step, donate_argnums=0, out_shardings=(replicated, replicated))

    def place(self, batch: dict) -> dict:
        """A whole host batch (every process holds all of it: evaluation) on the devices."""
        return parallel.shard_batch(batch, self.mesh)

    @property
    def train_rows(self) -> slice:
        """The rows of each global training batch this process reads (all, when alone)."""
        return parallel.process_rows(self.mesh, self.config.batch_size)

    def place_train(self, local_batch: dict) -> dict:
        """This process's rows of a training batch (`train_rows`) as the global batch."""
        return parallel.assemble_batch(local_batch, self.mesh, self.config.batch_size)

    def eval_batches(self, split: str):
        limit = self.config.train_eval_limit if split == "train" else None
        source = self.task.source(split)
        return pipeline.prefetch(
            pipeline.eval_batches(source, self.config.eval_batch_size, limit=limit or None)
        )

    def evaluate_with_artifacts(
        self, state: TrainState, splits
    ) -> tuple[dict[str, float], dict[str, dict]]:
        """({'<split>/<metric>': value}, {split: the artifacts its report draws})."""
        variables = state.variables()
        metrics, artifacts = {}, {}
        for split in splits:
            evaluation = self.task.evaluate(
                self.model, variables, split, self.eval_batches(split), self.place
            )
            metrics.update({f"{split}/{k}": v for k, v in evaluation.metrics.items()})
            artifacts[split] = evaluation.artifacts
        return metrics, artifacts

    def evaluate(self, state: TrainState, splits) -> dict[str, float]:
        """{'<split>/<metric>': value} of `splits`."""
        return self.evaluate_with_artifacts(state, splits)[0]


def _resolve_steps(config, train_size: int) -> tuple[int, int, int]:
    """(steps per epoch, total steps, eval interval) from epochs or steps in the config."""
    per_epoch = pipeline.steps_per_epoch(train_size, config.batch_size)
    if config.num_train_steps > 0:
        total = config.num_train_steps
    else:
        total = math.ceil(config.num_epochs * per_epoch)
    if config.eval_every_steps > 0:
        eval_every = config.eval_every_steps
    else:
        eval_every = max(1, round(config.eval_every_epochs * per_epoch))
    return per_epoch, max(1, total), eval_every


def build_experiment(
    config: ml_collections.ConfigDict, mesh=None, workdir: str | Path | None = None
) -> Experiment:
    """Builds task, model, optimiser and the (abstract) initial state for `config`.

    Args:
      config: the experiment config.
      mesh: the device mesh (default: every local device).
      workdir: the run directory, where the task may keep artifacts (a tokenizer); a
        temporary directory when None.
    """
    mesh = mesh if mesh is not None else parallel.make_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, "config.eval_batch_size")
    task = get_task(config)
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="dllab_"))
    workdir.mkdir(parents=True, exist_ok=True)
    # What a task makes once per run (a tokenizer) is made by process 0 and read by the rest.
    distributed.primary_first("task.prepare", lambda: task.prepare(workdir))
    model = task.build_model()
    per_epoch, total, eval_every = _resolve_steps(config, len(task.source("train")))

    init_batch = task.dummy_batch(mesh.devices.size)

    def init_variables(rng):
        variables = model.init(
            {"params": rng, "dropout": rng}, *task.init_inputs(init_batch), train=False
        )
        variables = dict(variables)
        params = variables.pop("params")
        return params, variables

    abstract_params, _ = jax.eval_shape(init_variables, jax.random.key(0))
    tx, schedule = optim.make_optimizer(
        config.optimizer, abstract_params, steps_per_epoch=per_epoch, total_steps=total
    )
    # What the optimiser leaves untrained, a model with towers runs frozen (no backward pass).
    model = optim.with_frozen_submodules(model, abstract_params, config.optimizer.trainable)

    def init_state(rng) -> TrainState:
        params, model_state = init_variables(rng)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            model_state=model_state,
            opt_state=tx.init(params),
            ema_params=params if config.ema_decay else {},
            tx=tx,
        )

    replicated = parallel.replicated(mesh)
    abstract_state = jax.eval_shape(init_state, jax.random.key(0))
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract_state
    )
    # Runs once per run: compiled for compile time, not speed (dllab_jax/performance.py).
    init_state_fn = performance.jit_run_once(init_state, out_shardings=replicated)
    return Experiment(
        config=config,
        task=task,
        model=model,
        mesh=mesh,
        steps_per_epoch=per_epoch,
        total_steps=total,
        eval_every=eval_every,
        schedule=schedule,
        tx=tx,
        abstract_state=abstract_state,
        init_state_fn=init_state_fn,
    )
