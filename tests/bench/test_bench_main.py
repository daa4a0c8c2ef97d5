"""`python -m dllab_jax.bench --quick` (dllab_jax/bench/__main__.py) writes its JSON and table
with every runner.

Timings are not asserted (they are benchmark figures, not test results): the test checks
that both files are written with every runner, the parameter counts and the FLOP count.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dllab_jax.config_utils import REPO_ROOT


@pytest.mark.slow
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
    # command checks; the counts are the ones models/blip_sizes.py states).
    assert two_tower["num_params"] == 2_375_488
    assert captioner["num_params"] == 835_872
    assert captioner["tokens_per_step"] == 4 * 11
    for inference_row in (two_tower, captioner):
        assert set(inference_row["runs"]) == {"jax_float32", "torch_eager"}
