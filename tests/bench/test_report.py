"""The benchmark's table (dllab_jax/bench/report.py): its arithmetic on a hand-made row."""

from __future__ import annotations

import pytest

from dllab_jax.bench import report


def test_table_arithmetic_on_a_hand_made_row():
    machine = {"peak_tflops": report.peak_tflops("NVIDIA H200")}
    row = {
        "name": "m",
        "batch_size": 100,
        "num_params": 5,
        "num_devices": 1,
        "flops_per_step": 2e12,
        "runs": {
            "jax_float32": {"step_s_median": 0.2},
            "jax_bfloat16": {"step_s_median": 0.1},
            "torch_eager": {"step_s_median": 0.3},
            "torch_compile": {"step_s_median": 0.12},
            "jax_float32_pipeline": {"step_s_median": 0.21},
        },
    }
    d = report.derived(row, machine)
    assert d["jax_best"] == "jax_bfloat16" and d["torch_best"] == "torch_compile"
    assert d["torch_over_jax"] == pytest.approx(1.2)
    assert d["eager_over_jax"] == pytest.approx(3.0)
    assert d["examples_per_s"] == pytest.approx(1000)
    assert d["tflops_per_s"] == pytest.approx(20)
    assert d["mfu"] == pytest.approx(20 / 989.4)  # bf16 run: the bf16 peak
    assert d["pipeline_ratio"] == pytest.approx(1.05)
    assert report.peak_tflops("cpu") is None


def test_scaling_table_gives_the_speed_up_over_the_first_row():
    from dllab_jax.bench.scaling import scaling_table

    rows = [
        dict(
            num_processes=1,
            num_devices=1,
            global_batch_size=128,
            step_s_median=0.2,
            examples_per_s=640.0,
        ),
        dict(
            num_processes=2,
            num_devices=2,
            global_batch_size=128,
            step_s_median=0.125,
            examples_per_s=1024.0,
        ),
    ]
    lines = scaling_table(rows).splitlines()
    assert lines[2] == "| 1 | 1 | 128 | 200.0 | 640.0 | 1.00x |"
    assert lines[3] == "| 2 | 2 | 128 | 125.0 | 1024.0 | 1.60x |"
