"""Step runners for JAX and PyTorch, timed interleaved in one process.

Every runner is a zero-argument callable that runs one complete train step and waits for it
(`block_until_ready` on all outputs; `torch.cuda.synchronize()` on a GPU). Runners of one
case are timed in rounds, each round a few steps of each runner in turn, so a slow phase of
a shared machine hits all of them alike; the figure is the median step.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from dllab_jax import train
from dllab_jax.data import pipeline


def flops_of(compiled) -> float | None:
    """XLA's FLOP count of a compiled program (None where the backend has no cost analysis)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


class JaxTrainStep:
    """The project's jitted train step for `config`, on one batch of the config's own data.

    The batch is drawn from the task's train source (random pixels for `synthetic`, real
    procedural examples otherwise), so labels and concepts are in range and nothing is zero.
    """

    def __init__(self, config, workdir: Path):
        self.exp = exp = train.build_experiment(config, workdir=workdir)
        self.config = config
        source = exp.task.source("train")
        host_batch = source.get(np.arange(config.batch_size) % len(source))
        self.host_batch = host_batch
        self.batch = exp.place(host_batch)
        start = time.perf_counter()
        self.state = exp.init_state_fn(jax.random.key(config.seed))
        jax.block_until_ready(self.state)
        self.init_s = time.perf_counter() - start
        start = time.perf_counter()
        self.compiled = exp.jitted_train_step.lower(self.state, self.batch).compile()
        self.compile_s = time.perf_counter() - start
        self.flops = flops_of(self.compiled)
        self.num_params = train.count_params(self.state.params)
        self.num_devices = exp.mesh.devices.size

    def __call__(self) -> None:
        self.state, metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready((self.state, metrics))

    def last_loss(self) -> float:
        _, metrics = self.compiled(self.state, self.batch)  # not timed
        return float(metrics["loss"])

    def fed_by_pipeline(self) -> Callable[[], None]:
        """A runner whose every step takes the next batch of the real input pipeline
        (source, augmentation, prefetch thread, host-to-device copy), as `train.py` does."""
        batches = pipeline.prefetch(
            pipeline.train_batches(
                self.exp.task.source("train"),
                self.config.batch_size,
                seed=self.config.data_seed,
                augment=self.exp.task.augment(),
                rows=self.exp.train_rows,
            )
        )

        def step() -> None:
            self.state, metrics = self.compiled(self.state, self.exp.place_train(next(batches)))
            jax.block_until_ready((self.state, metrics))

        return step

    def peak_memory(self) -> int | None:
        """Bytes the compiled step needs per device (XLA's memory analysis: arguments +
        outputs + temporaries - donated aliases). Unlike the device's peak counter it is the
        step's own, not the largest thing the process has run so far; on any backend."""
        try:
            m = self.compiled.memory_analysis()
            total = (
                m.argument_size_in_bytes
                + m.output_size_in_bytes
                + m.temp_size_in_bytes
                - m.alias_size_in_bytes
            )
        except Exception:  # not every backend reports it
            return None
        return int(total) if total > 0 else None


def time_interleaved(
    runners: dict[str, Callable[[], None]], *, warmup: int, rounds: int, steps_per_round: int
) -> dict[str, list[float]]:
    """Seconds per step of each runner, `rounds` x `steps_per_round` each, interleaved."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(steps_per_round):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    return {
        "step_s_median": statistics.median(times),
        "step_s_min": min(times),
        "timed_steps": len(times),
    }
