"""The benchmark command runs and checks what it compares; its figures live in its files.

Timings are not asserted (they are benchmark figures, not test results): the tests check that
`python -m dllab_jax.bench --quick` writes both files with every runner, that parameter
counts are compared (a mismatching reference is refused), the table's arithmetic on a
hand-made row, the synthetic stand-in data, and `--mode=benchmark` without a data set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from dllab_jax import benchmark, data
from dllab_jax.bench import cases, report
from dllab_jax.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_quick_suite_writes_json_and_table(tmp_path):
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "dllab_jax.bench", "--quick", "--only=CNN,tiny"]
    command += ["--dtypes=float32", "--torch=eager", "--rounds=1", "--steps-per-round=2"]
    command += ["--warmup=1", f"--out={out}"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((out / "bench.json").read_text())
    row, two_tower, captioner = result["rows"]
    assert row["name"] == "CNN 4/8 (quick)"
    # widths 4/8 on RGB, 10 classes: convs 3*9*4 + 4*9*4 + 4*9*8 + 8*9*8, BN 2*(4+4+8+8),
    # head 8*10 + 10.
    assert row["num_params"] == 108 + 144 + 288 + 576 + 48 + 90
    assert set(row["runs"]) == {"jax_float32", "torch_eager"}
    assert all(run["timed_steps"] == 2 and run["step_s_median"] > 0 for run in row["runs"].values())
    assert row["flops_per_step"] > 0
    table = (out / "bench.md").read_text()
    assert "| CNN 4/8 (quick) | 1,254 | 8 |" in table
    # The inference rows: transformers' BLIP at the same sizes has the same parameters (the
    # command checks; the counts are the ones models/blip.py and models/captioner.py state).
    assert two_tower["num_params"] == 2_375_488
    assert captioner["num_params"] == 835_872
    assert captioner["tokens_per_step"] == 4 * 11
    for inference_row in (two_tower, captioner):
        assert set(inference_row["runs"]) == {"jax_float32", "torch_eager"}


def test_a_reference_with_other_parameter_counts_is_refused(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import torch

    from dllab_jax.bench import __main__ as cli
    from dllab_jax.bench import torch_models

    monkeypatch.setattr(
        torch_models, "build_torch_model", lambda name, **kw: torch.nn.Linear(3, 10)
    )
    case = next(c for c in cases.SUITES["quick"] if c.name.startswith("CNN"))
    args = cli._parse(["--quick", "--rounds=1", "--steps-per-round=1", "--warmup=0"])
    with pytest.raises(UserError, match="reference of 'cnn' has 40 parameters"):
        cli.run_case(case, args, ["float32"], ["eager"], tmp_path)


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


def test_synthetic_source_is_random_in_range_and_deterministic():
    config = ml_collections.ConfigDict(
        dict(name="synthetic", image_size=(6, 10), num_classes=4, labels="dense")
    )
    source = data.get_source(config, "train")
    assert source.info.image_shape == (6, 10, 3) and source.info.num_classes == 4
    batch = source.get(np.arange(8))
    assert batch["image"].shape == (8, 6, 10, 3) and batch["label"].shape == (8, 6, 10)
    assert batch["image"].std() > 50 and set(np.unique(batch["label"])) == {0, 1, 2, 3}
    np.testing.assert_array_equal(source.get(np.arange(8))["image"], batch["image"])
    with pytest.raises(UserError, match="labels must be 'class' or 'dense'"):
        data.get_source(ml_collections.ConfigDict(dict(name="synthetic", labels="x")), "train")


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
