"""`--mode=benchmark`: time one config's jitted train step on a device-resident batch.

The batch comes from the config's own train source; where that data set is not on disk and
its shape is known (CIFAR-10, CARLA, Oxford-IIIT Pet, VOC), from random data of that shape.
`python -m dllab_jax.bench` times whole suites against PyTorch.
"""

from __future__ import annotations

import platform
import statistics
from pathlib import Path

import jax
import ml_collections

from dllab_jax import checkpoint as ckpt_lib
from dllab_jax import config_utils, distributed, run_dir
from dllab_jax import data as data_lib
from dllab_jax.bench import cases, timing
from dllab_jax.errors import UserError


def run_benchmark(config, workdir: str | Path) -> dict:
    """Compile time, median step time, examples/s, FLOPs and TFLOP/s, the step's memory.

    Writes `<workdir>/benchmark.json` and prints one line (process 0 of a multi-process run;
    `python -m dllab_jax.bench.scaling` compares 1 and N local processes).
    """
    config_utils.validate_config(config)
    with run_dir.claim_for_all_processes(workdir, what="benchmark") as run:
        result = _time_train_step(config, run.path)
        run.started()
        if distributed.is_primary():
            ckpt_lib.write_json(run.path / "benchmark.json", result)
    return result


def _with_stand_in_data(config):
    """`config` itself if its train split loads; else, for a data set we know the shape of,
    the same config on `synthetic` data of that shape (the step is the same, the pixels
    random), with a note. Timing should not need a data set on disk."""
    try:
        data_lib.get_source(config.data, "train")
        return config, None
    except UserError as error:
        stand_in = cases.synthetic_stand_in(config.data)
        if stand_in is None:
            raise
        print(f"note: {error}; timing on random data of the same shape instead")
        config = config.copy_and_resolve_references()
        config.unlock()
        config.data = stand_in
        if "augment" in config:
            config.augment = ml_collections.ConfigDict()
        config.lock()
        return config, f"synthetic stand-in for {stand_in.stands_in_for}"


def _time_train_step(config, workdir: Path) -> dict:
    config, data_note = _with_stand_in_data(config)
    step = timing.JaxTrainStep(config, workdir)
    times = timing.time_interleaved(
        {"train": step},
        warmup=config.benchmark.warmup_steps,
        rounds=1,
        steps_per_round=config.benchmark.steps,
    )["train"]
    step_s = statistics.median(times)
    devices = step.exp.mesh.devices.flatten().tolist()
    flops = step.flops
    memory = step.peak_memory()
    result = {
        "model": config.model.name,
        "dtype": config.model.get("dtype", "float32"),
        "data": data_note or config.data.name,
        "global_batch_size": config.batch_size,
        "num_params": step.num_params,
        "device": devices[0].device_kind,
        "num_devices": len(devices),
        "num_processes": jax.process_count(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "compile_s": round(step.compile_s, 3),
        "step_s_median": step_s,
        "step_s_min": min(times),
        "timed_steps": len(times),
        "examples_per_s": config.batch_size / step_s,
        # XLA's cost analysis of the partitioned program counts one device's work.
        "flops_per_step_per_device": flops,
        "tflops_per_s": flops * len(devices) / step_s / 1e12 if flops else None,
        # What the compiled step needs per device (XLA memory analysis), on any backend.
        "step_memory_bytes": memory,
    }
    tflops = f"{result['tflops_per_s']:.3f}" if flops else "n/a"
    memory = f"{memory / 2**30:.2f} GiB" if memory else "n/a"
    if not distributed.is_primary():
        return result
    print(
        f"benchmark {config.model.name} batch {config.batch_size} on {len(devices)}x "
        f"{result['device']}: compile {step.compile_s:.2f} s, step {step_s * 1e3:.2f} ms "
        f"(median of {len(times)}), {result['examples_per_s']:.1f} examples/s, {tflops} "
        f"TFLOP/s, step memory {memory}"
    )
    return result
