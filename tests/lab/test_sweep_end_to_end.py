"""`main.py --mode=sweep` end to end: a smoke config, two rows, two seeds; the second call
reuses every run, `--mode=report` rebuilds the report without training."""

import json
import subprocess
import sys

import pytest

from dllab_jax.config_utils import REPO_ROOT

ROWS = "cnn,linear"  # the two cheapest rows of E1's sweep


def _main(*args):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "main.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )


@pytest.mark.slow
def test_a_two_row_two_seed_sweep_runs_reuses_and_reports(tmp_path):
    sweep = [
        "--config=configs/classification.py:smoke",
        f"--workdir={tmp_path}",
        "--sweep.seeds=2",
        f"--sweep.rows={ROWS}",
        "--config.num_train_steps=4",
    ]
    first = _main(*sweep, "--mode=sweep")
    assert first.returncode == 0, first.stderr[-2000:]
    progress = [line for line in first.stdout.splitlines() if line.startswith("sweep [")]
    assert [line.split(" | ")[1] for line in progress] == [
        "now cnn/seed0",
        "now cnn/seed1",
        "now linear/seed0",
        "now linear/seed1",
    ]
    assert progress[0].startswith("sweep [--------------------] 0/4 runs done (0 reused)")
    assert "ETA" in progress[1] and "after the first run" not in progress[1]
    summaries = {}
    for row in ROWS.split(","):
        for seed in (0, 1):
            summary = json.loads((tmp_path / row / f"seed{seed}" / "summary.json").read_text())
            assert summary["step"] == 4
            summaries[row, seed] = summary["metrics"]["best/test/accuracy"]
            config = json.loads((tmp_path / row / f"seed{seed}" / "config.json").read_text())
            assert (config["seed"], config["data_seed"]) == (seed, seed)
    # Another seed is another run (initialisation and batch order).
    cnn_runs = [
        json.loads((tmp_path / "cnn" / f"seed{s}" / "metrics.jsonl").read_text().split("\n")[0])
        for s in (0, 1)
    ]
    assert cnn_runs[0]["train/loss"] != cnn_runs[1]["train/loss"]
    report = json.loads((tmp_path / "report.json").read_text())
    cnn = report["rows"]["cnn"]["best/test/accuracy"]
    assert cnn["n"] == 2
    assert cnn["mean"] == pytest.approx((summaries["cnn", 0] + summaries["cnn", 1]) / 2)
    assert report["rows"]["cnn"]["reference"] == {"best/test/accuracy": 0.702}
    text = (tmp_path / "REPORT.md").read_text()
    assert "(report/curves.png)" in text and "(report/cnn_confusion_test.png)" in text

    again = _main(*sweep, "--mode=sweep")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "sweep: 4 runs done (4 reused, 0 run in" in again.stdout
    (tmp_path / "REPORT.md").unlink()
    rebuilt = _main(*sweep, "--mode=report")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert (tmp_path / "REPORT.md").read_text().split("\n")[4:] == text.split("\n")[4:]
