"""Logs (dllab_jax/logs.py): metrics.jsonl survives a line cut short, and the core trains,
logs (TensorBoard events without clu) and benchmarks without TensorFlow."""

import json
import subprocess
import sys

import pytest

from dllab_jax import logs
from dllab_jax.config_utils import REPO_ROOT


def test_history_drops_a_line_cut_short_and_the_lost_future(tmp_path, run_files):
    path = tmp_path / logs.HISTORY_FILE
    path.write_text('{"step": 2, "a": 1.0}\n{"step": 4, "a": 2.0}\n{"step": 6, "a"')
    history = logs.History(tmp_path, resume_step=4)
    assert [r["step"] for r in history.records] == [2, 4]
    history.append(6, {"a": 3.0})
    assert [r["step"] for r in run_files.history(tmp_path)] == [2, 4, 6]


_WITHOUT_TENSORFLOW = """
import runpy, sys
# A module set to None in sys.modules cannot be imported: as on a machine without them.
for name in ("tensorflow", "tensorflow_datasets", "clu"):
    sys.modules[name] = None
workdir, bench = sys.argv[1], sys.argv[2]
sys.argv = ["main.py", "--config=configs/classification.py:smoke", "--workdir=" + workdir]
try:
    runpy.run_path("main.py", run_name="__main__")
except SystemExit as stop:
    assert not stop.code, stop.code
from dllab_jax import benchmark
from dllab_jax.config_utils import load_config
config = load_config("configs/classification.py:smoke")
config.unlock()
config.benchmark.steps, config.benchmark.warmup_steps = 2, 1
benchmark.run_benchmark(config, bench)
"""


@pytest.mark.slow
def test_core_trains_logs_and_benchmarks_without_tensorflow(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, str(tmp_path / "run"), str(tmp_path / "b")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 6 and 0.0 <= summary["metrics"]["val/accuracy"] <= 1.0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/accuracy")] == [3, 6]
    assert json.loads((tmp_path / "b" / "benchmark.json").read_text())["timed_steps"] == 2
