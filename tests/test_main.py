"""The command line (main.py) in subprocesses: errors are one line, a second process on a
workdir is turned away, SIGTERM saves and exits 143, a resume with another model is refused."""

import signal
import subprocess
import sys
import time

import jax
import pytest

from dllab_jax import checkpoint
from dllab_jax.config_utils import REPO_ROOT

SMOKE = "configs/classification.py:smoke"


def _run_main(*args, cwd):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "main.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _start_main(*args, cwd):
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "main.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_cli_unknown_config_key_and_missing_data_folder_are_one_line_errors(tmp_path):
    unknown = _run_main(f"--config={REPO_ROOT}/{SMOKE}", "--config.optimizer.lr=0.1", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "Traceback" not in unknown.stderr
    assert (
        unknown.stderr.strip()
        .splitlines()[-1]
        .startswith("error: unknown config key 'optimizer.lr'")
    )
    missing = _run_main(
        f"--config={REPO_ROOT}/configs/classification.py:birds,smoke",
        f"--config.data.root={tmp_path / 'no_such_folder'}",
        f"--workdir={tmp_path / 'w'}",
        cwd=tmp_path,
    )
    assert missing.returncode == 2, missing.stderr[-2000:]
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no_such_folder" in last


@pytest.mark.slow
def test_cli_lock_sigterm_and_refused_resume(tmp_path, run_files):
    """One long CLI run: a second process is turned away, SIGTERM saves and exits 143, and a
    resume with another model is one line with no traceback."""
    workdir = tmp_path / "run"
    args = [
        f"--config={REPO_ROOT}/{SMOKE}",
        f"--workdir={workdir}",
        "--config.num_train_steps=100000",
        "--config.log_every_steps=1",
        "--config.checkpoint.every_steps=1000",
    ]
    first = _start_main(*args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not (workdir / "metrics.jsonl").is_file() or not run_files.history(workdir):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        second = _start_main(*args, cwd=tmp_path)
        _, err = second.communicate(timeout=240)
        assert second.returncode == 2
        assert "Traceback" not in err
        assert (
            err.strip()
            .splitlines()[-1]
            .startswith(f"error: workdir {workdir} is in use by pid {first.pid} on ")
        )
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    step = int(last.split("interrupted at step ")[1].split(" ")[0])
    assert last == (
        f"interrupted at step {step} (SIGTERM); checkpoint saved; rerun the same command to resume"
    )
    assert checkpoint.RunCheckpoints(workdir).latest_step() == step
    config_before = (workdir / "config.json").read_bytes()
    refused = _start_main(*args, "--config.model.widths=(8, 8, 8)", cwd=tmp_path)
    _, err = refused.communicate(timeout=240)
    assert refused.returncode == 2
    assert "Traceback" not in err and "Event loop is closed" not in err
    assert "does not fit this config" in err.strip().splitlines()[-1]
    assert (workdir / "config.json").read_bytes() == config_before
    assert jax.device_count() == 4  # the CLI runs saw the same simulated devices (conftest)
