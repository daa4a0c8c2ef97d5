"""`--mode=benchmark`: time the jitted train step on device-resident synthetic batches."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from dllab_jax import checkpoint as ckpt_lib
from dllab_jax import config_utils, run_dir, train


def _synthetic_batch(exp: train.Experiment) -> dict:
    """The task's dummy batch filled with random values of the right dtypes and ranges."""
    batch = exp.task.dummy_batch(exp.config.batch_size)
    rng = np.random.default_rng(0)
    out = {}
    for key, value in batch.items():
        if value.dtype == np.uint8:
            out[key] = rng.integers(0, 256, value.shape, dtype=np.uint8)
        elif np.issubdtype(value.dtype, np.integer):
            # Labels: 0 is valid for every task; random ones would need the class count.
            out[key] = np.zeros_like(value)
        else:
            out[key] = rng.standard_normal(value.shape).astype(value.dtype)
    return out


def _flops(compiled) -> float | None:
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def run_benchmark(config, workdir: str | Path) -> dict:
    """Compile time, median step time, examples/s, FLOPs and TFLOP/s, peak memory.

    Writes `<workdir>/benchmark.json` and prints one line.
    """
    config_utils.validate_config(config)
    with run_dir.claim(workdir, what="benchmark") as run:
        result = _time_train_step(config, run.path)
        run.started()
        ckpt_lib.write_json(run.path / "benchmark.json", result)
    return result


def _time_train_step(config, workdir: Path) -> dict:
    exp = train.build_experiment(config, workdir=workdir)
    state = exp.init_state_fn(jax.random.key(config.seed))
    batch = exp.place(_synthetic_batch(exp))

    lowered = exp.jitted_train_step.lower(state, batch)
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    flops = _flops(compiled)

    for _ in range(config.benchmark.warmup_steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times = []
    for _ in range(config.benchmark.steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)

    devices = exp.mesh.devices.flatten().tolist()
    stats = devices[0].memory_stats() or {}
    result = {
        "model": config.model.name,
        "dtype": config.model.get("dtype", "float32"),
        "global_batch_size": config.batch_size,
        "num_params": train.count_params(state.params),
        "device": devices[0].device_kind,
        "num_devices": len(devices),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "compile_s": round(compile_s, 3),
        "step_s_median": step_s,
        "step_s_min": min(times),
        "timed_steps": len(times),
        "examples_per_s": config.batch_size / step_s,
        # XLA's cost analysis of the partitioned program counts one device's work.
        "flops_per_step_per_device": flops,
        "tflops_per_s": flops * len(devices) / step_s / 1e12 if flops else None,
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
    }
    tflops = f"{result['tflops_per_s']:.3f}" if flops else "n/a"
    memory = stats.get("peak_bytes_in_use")
    memory = f"{memory / 2**30:.2f} GiB" if memory else "n/a"
    print(
        f"benchmark {config.model.name} batch {config.batch_size} on {len(devices)}x "
        f"{result['device']}: compile {compile_s:.2f} s, step {step_s * 1e3:.2f} ms (median of "
        f"{len(times)}), {result['examples_per_s']:.1f} examples/s, {tflops} TFLOP/s, "
        f"peak memory {memory}"
    )
    return result
