"""`--mode=benchmark` (dllab_jax/benchmark.py): timings and FLOPs of a config's train step,
and a faithful preset timed on stand-in data when its data set is absent."""

import json

import jax
import pytest

from dllab_jax import benchmark


@pytest.mark.slow
def test_benchmark_mode_writes_timings_and_flops(tmp_path, smoke_config):
    config = smoke_config(**{"benchmark.steps": 3, "benchmark.warmup_steps": 1})
    result = benchmark.run_benchmark(config, tmp_path)
    on_disk = json.loads((tmp_path / "benchmark.json").read_text())
    assert on_disk["timed_steps"] == 3
    assert on_disk["step_s_median"] > 0 and on_disk["compile_s"] > 0
    assert on_disk["num_devices"] == 4
    # 16 images of 32x32 through a CNN: well over a MFLOP, far under a TFLOP per step.
    assert 1e6 < result["flops_per_step_per_device"] < 1e12


@pytest.mark.slow
def test_benchmark_mode_times_a_faithful_preset_without_its_data(tmp_path):
    """CIFAR-10 is not prepared here: the same step is timed on random 32x32 images."""
    from dllab_jax import config_utils

    config = config_utils.load_config("configs/classification.py:cifar10,smoke")
    config.unlock()
    config.data.data_dir = str(tmp_path / "no_tfds_here")
    config.benchmark.steps, config.benchmark.warmup_steps = 2, 1
    config.lock()
    result = benchmark.run_benchmark(config, tmp_path / "run")
    assert result["data"] == "synthetic stand-in for cifar10"
    assert result["timed_steps"] == 2 and result["num_devices"] == jax.device_count()
    on_disk = json.loads((tmp_path / "run" / "benchmark.json").read_text())
    assert on_disk["num_params"] == result["num_params"] > 0
