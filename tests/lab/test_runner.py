"""Planning a sweep's runs, reusing finished ones, refusing folders made by another command."""

import json
import subprocess
import sys

import pytest

from dllab_jax.config_utils import REPO_ROOT
from dllab_jax.errors import UserError
from dllab_jax.lab import runner
from dllab_jax.lab.spec import Row, Sweep

SWEEP = Sweep(
    experiment="E0",
    title="two rows",
    rows=(
        Row("a", "cnn", overrides={"optimizer.learning_rate": 0.01, "model.widths": (8, 16)}),
        Row("b", ""),
    ),
    metrics=("val/accuracy",),
)


def test_every_row_and_seed_gets_its_workdir_and_command(tmp_path):
    runs = runner.plan_runs(
        SWEEP,
        "configs/classification.py",
        tmp_path,
        seeds=2,
        base_presets="smoke",
        extra_args=("--config.num_train_steps=3",),
    )
    assert [run.key for run in runs] == ["a/seed0", "a/seed1", "b/seed0", "b/seed1"]
    assert runs[1].workdir == tmp_path / "a" / "seed1"
    assert runs[1].args == (
        "--config=configs/classification.py:cnn,smoke",
        f"--workdir={tmp_path / 'a' / 'seed1'}",
        "--config.seed=1",
        "--config.data_seed=1",
        "--config.optimizer.learning_rate=0.01",
        "--config.model.widths=(8, 16)",
        "--config.num_train_steps=3",  # the user's flags come last: they win
    )
    assert runs[2].args[0] == "--config=configs/classification.py:smoke"
    assert runs[0].shell_command().startswith("python main.py --config=configs/classification.py:")
    only_b = runner.plan_runs(SWEEP, "configs/x.py", tmp_path, rows=("b",))
    assert [run.key for run in only_b] == ["b/seed0"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(seeds=0), "--sweep.seeds must be a positive integer"),
        (dict(rows=("c",)), "--sweep.rows names unknown rows ['c']"),
        (dict(extra_args=("--workdir=x",)), "only --config.<key>=<value> flags"),
        (dict(extra_args=("--config.seed=3",)), "a sweep sets config.seed and config.data_seed"),
    ],
)
def test_bad_sweep_options_are_refused(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        runner.plan_runs(SWEEP, "configs/classification.py", tmp_path, **kwargs)


def _finish(run, accuracy):
    run.workdir.mkdir(parents=True)
    (run.workdir / "summary.json").write_text(json.dumps({"metrics": {"val/accuracy": accuracy}}))


def test_finished_runs_are_reused_without_starting_anything(tmp_path):
    runs = runner.plan_runs(SWEEP, "configs/classification.py", tmp_path)
    for run in runs:
        _finish(run, 0.5)
    lines = []
    # A python that fails if started: nothing may run.
    runner.run_planned(runs, tmp_path, echo=lines.append, python="/bin/false")
    assert lines == ["sweep: 2 runs done (2 reused, 0 run in 0m00s)"]


def test_a_workdir_made_by_another_command_is_refused(tmp_path):
    runs = runner.plan_runs(SWEEP, "configs/classification.py", tmp_path)
    _finish(runs[0], 0.5)
    other = ["--config=configs/classification.py:vit", "--workdir=x"]
    (tmp_path / runner.RECORD).write_text(json.dumps({"runs": {"a/seed0": {"args": other}}}))
    with pytest.raises(UserError, match="holds a run made by another command"):
        runner.run_planned(runs, tmp_path, python="/bin/false")


def test_a_failing_run_stops_the_sweep_with_its_status(tmp_path):
    runs = runner.plan_runs(SWEEP, "configs/classification.py", tmp_path)
    with pytest.raises(runner.SweepStopped, match="a/seed0 exited with status 1") as stop:
        runner.run_planned(runs, tmp_path, echo=lambda line: None, python="/bin/false")
    assert stop.value.exit_code == 1
    record = json.loads((tmp_path / runner.RECORD).read_text())
    assert list(record["runs"]) == ["a/seed0"]  # b never started


def test_print_commands_runs_nothing_and_prints_one_line_per_run(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "main.py"),
            "--config=configs/seg_heads.py",
            "--mode=sweep",
            "--sweep.seeds=2",
            "--sweep.print_commands",
            f"--workdir={tmp_path / 'sweep'}",
            "--config.num_epochs=1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 8  # 4 heads x 2 seeds
    workdir = tmp_path / "sweep" / "conv" / "seed1"
    assert lines[3] == (
        f"python main.py --config=configs/seg_heads.py:conv --workdir={workdir} "
        "--config.seed=1 --config.data_seed=1 --config.num_epochs=1"
    )
    assert not (tmp_path / "sweep").exists()


def test_a_config_without_a_sweep_says_which_have_one(tmp_path):
    config = tmp_path / "plain.py"
    config.write_text(
        "import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict()\n"
    )
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "main.py"), f"--config={config}", "--mode=sweep"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "declares no comparison (no get_sweep())" in out.stderr
    assert "configs/seg_heads.py" in out.stderr


def test_a_signal_reaches_the_running_child_once_and_stops_the_sweep(tmp_path):
    """SIGTERM to the sweep: passed on to the run (which saves and exits 128 + 15), then the
    sweep stops with that status and starts nothing more."""
    import os
    import signal
    import threading
    import time

    started, got = tmp_path / "started", tmp_path / "got"
    child = tmp_path / "fake_python"
    child.write_text(
        "#!/bin/sh\n"
        f"trap 'echo TERM >> {got}; exit 143' TERM\n"
        f"touch {started}\n"
        "while true; do sleep 0.05; done\n"
    )
    child.chmod(0o755)

    def terminate_when_started():
        while not started.exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    runs = runner.plan_runs(SWEEP, "configs/classification.py", tmp_path)
    killer = threading.Thread(target=terminate_when_started)
    killer.start()
    with pytest.raises(runner.SweepStopped) as stop:
        runner.run_planned(runs, tmp_path, echo=lambda line: None, python=str(child))
    killer.join()
    assert stop.value.exit_code == 143
    assert got.read_text() == "TERM\n"  # once
    assert list(json.loads((tmp_path / runner.RECORD).read_text())["runs"]) == ["a/seed0"]
