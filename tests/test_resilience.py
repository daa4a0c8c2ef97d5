"""Runs that survive kills, signals and bad input (dllab_jax/run_dir.py, preemption.py and the
loop's resume path in train.py): each test reproduces one way a run used to break."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image
from test_train import SMOKE, smoke_config

from dllab_jax import checkpoint, logs, preemption, run_dir, train
from dllab_jax.config_utils import REPO_ROOT, load_config, validate_config
from dllab_jax.data import get_source
from dllab_jax.errors import UserError

# Evaluations (and so new bests) at 3, 6, 9; train logs at 4, 8, 10; regular saves at 4, 8, 10:
# the windows where a kill used to break a run all occur in 10 steps.
RESILIENT = {
    "num_train_steps": 10,
    "eval_every_steps": 3,
    "log_every_steps": 4,
    "checkpoint.every_steps": 4,
}


def resilient_config(**overrides):
    return smoke_config(**RESILIENT, **overrides)


def _history(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _steps(workdir, sub):
    directory = workdir / sub
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _snapshot(directory):
    """{relative path: sha256} of every file under `directory` but the lock (which names its
    latest holder)."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            if name == run_dir.LOCK_FILE:
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    workdir = tmp_path_factory.mktemp("reference")
    summary = train.train_and_evaluate(resilient_config(), workdir)
    return workdir, summary


def _assert_same_run(workdir, summary, reference):
    ref_dir, ref_summary = reference
    assert summary["step"] == ref_summary["step"]
    assert summary["best_step"] == ref_summary["best_step"]
    assert summary["metrics"] == ref_summary["metrics"]  # bit-identical
    assert _history(workdir) == _history(ref_dir)  # record for record


def test_kill_after_a_best_save_resumes(tmp_path, reference):
    # The defect: best/3 written, the next regular save at 50 never reached, the process
    # killed; every restart re-saved best/3 and crashed with StepAlreadyExistsError.
    workdir = tmp_path / "run"
    assert train.train_and_evaluate(resilient_config(), workdir, stop_at_step=3) == {}
    # A new best is saved as the latest too, first: a rerun starts at the best's step.
    assert _steps(workdir, "best") == [3] and _steps(workdir, "checkpoints") == [3]
    # The state the defect left (a best newer than any latest, e.g. from an older version):
    shutil.rmtree(workdir / "checkpoints")
    summary = train.train_and_evaluate(resilient_config(), workdir)
    _assert_same_run(workdir, summary, reference)
    assert [p.name.split("-")[:2] for p in (workdir / "set_aside").iterdir()] == [["best", "3"]]


class _Killed(BaseException):
    """Stands for SIGKILL at a chosen line: nothing after it runs, no handler sees it."""


def test_kill_between_the_latest_and_the_best_save_of_one_step(tmp_path, reference, monkeypatch):
    workdir = tmp_path / "run"

    def killed(*args, **kwargs):
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.RunCheckpoints, "save_best", killed)
        with pytest.raises(_Killed):
            train.train_and_evaluate(resilient_config(), workdir)
    assert _steps(workdir, "checkpoints") == [3] and _steps(workdir, "best") == []
    summary = train.train_and_evaluate(resilient_config(), workdir)
    _assert_same_run(workdir, summary, reference)


def _signal_at(step_to_signal, signum, monkeypatch):
    """Makes the loop's progress callback send `signum` to this process at that step."""
    real = logs.progress_reporter

    def reporter(*args, **kwargs):
        report = real(*args, **kwargs)

        def progress(step):
            report(step)
            if step == step_to_signal:
                os.kill(os.getpid(), signum)

        return progress

    monkeypatch.setattr(train.logs, "progress_reporter", reporter)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_then_resume_equals_the_uninterrupted_run(
    tmp_path, reference, monkeypatch, signum
):
    workdir = tmp_path / "run"
    with monkeypatch.context() as patch:
        _signal_at(5, signum, patch)
        with pytest.raises(preemption.Interrupted) as stop:
            train.train_and_evaluate(resilient_config(), workdir)
    assert stop.value.step == 5 and stop.value.saved
    assert stop.value.exit_code == 128 + signum
    assert str(stop.value) == (
        f"interrupted at step 5 ({signal.Signals(signum).name}); checkpoint saved; rerun the "
        "same command to resume"
    )
    assert _steps(workdir, "checkpoints")[-1] == 5
    # The handlers are restored once the run is over.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
    # Step 5 is inside the train window 5..8: its metrics travel with the checkpoint, so the
    # window logged at 8 averages the same four steps as the uninterrupted run's.
    summary = train.train_and_evaluate(resilient_config(), workdir)
    _assert_same_run(workdir, summary, reference)


def test_a_truncated_latest_checkpoint_falls_back_to_the_older_one(tmp_path, reference, capsys):
    workdir = tmp_path / "run"
    train.train_and_evaluate(resilient_config(), workdir, stop_at_step=9)
    _, newest = _steps(workdir, "checkpoints")
    params = workdir / "checkpoints" / str(newest) / "params"
    data_files = sorted(params.rglob("ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)
    os.truncate(data_files[-1], 10)
    capsys.readouterr()
    summary = train.train_and_evaluate(resilient_config(), workdir)
    err = capsys.readouterr().err
    assert f"checkpoint step {newest} in" in err and "does not restore" in err
    assert "Exception ignored" not in err  # tensorstore's sibling failures stay quiet
    assert f"set aside checkpoints/{newest}" in err
    _assert_same_run(workdir, summary, reference)


def test_unreadable_checkpoints_are_one_error_and_left_untouched(tmp_path):
    workdir = tmp_path / "run"
    train.train_and_evaluate(resilient_config(), workdir, stop_at_step=5)
    for step in _steps(workdir, "checkpoints"):
        (workdir / "checkpoints" / str(step) / "meta" / "metadata").write_text("{half")
    before = _snapshot(workdir)
    with pytest.raises(UserError, match=r"no checkpoint in .*checkpoints restores \(step 4"):
        train.train_and_evaluate(resilient_config(), workdir)
    assert _snapshot(workdir) == before


def test_a_second_process_in_one_workdir_stops_at_once(tmp_path):
    with run_dir.claim(tmp_path / "run"):
        start = time.monotonic()
        with pytest.raises(UserError, match=rf"is in use by pid {os.getpid()} on "):
            train.train_and_evaluate(resilient_config(), tmp_path / "run")
        assert time.monotonic() - start < 5
    # The lock went with its holder: the directory can be claimed again.
    with run_dir.claim(tmp_path / "run"):
        pass


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -4}, "batch_size"),
        ({"batch_size": 6}, "batch_size"),  # not divisible by the 4 devices
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"num_train_steps": 0}, "num_train_steps"),
        ({"num_train_steps": -1, "num_epochs": 0.0}, "num_epochs"),
        ({"log_every_steps": 0}, "log_every_steps"),
        ({"checkpoint.every_steps": -1}, "checkpoint.every_steps"),
        ({"checkpoint.keep": 0}, "checkpoint.keep"),
        ({"optimizer.learning_rate": -1e-3}, "optimizer.learning_rate"),
        ({"optimizer.learning_rate": float("nan")}, "optimizer.learning_rate"),
        ({"optimizer.b2": 1.0}, "optimizer.b2"),
        ({"optimizer.weight_decay": -0.1}, "optimizer.weight_decay"),
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"model.dropout": 1.5}, "model.dropout"),
        ({"data.num_train": -5}, "data.num_train"),
        ({"checkpoint.best_mode": "largest"}, "checkpoint.best_mode"),
    ],
)
def test_bad_numbers_are_refused_naming_the_key(overrides, key):
    config = smoke_config(**overrides)
    with pytest.raises(UserError, match=rf"^config\.{key}=.* is not valid: it must be"):
        validate_config(config, num_devices=4)


def test_every_shipped_config_and_preset_validates():
    for path in sorted((REPO_ROOT / "configs").glob("*.py")):
        namespace = {}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        for preset in ["", *namespace.get("PRESETS", {})]:
            config = namespace["get_config"](preset) if preset else namespace["get_config"]()
            validate_config(config, num_devices=1)


def test_a_refused_start_writes_nothing(tmp_path, reference):
    ref_dir, _ = reference
    finished = tmp_path / "finished"
    shutil.copytree(ref_dir, finished)
    before = _snapshot(finished)
    # Bad numbers: refused before anything is touched, on a finished run and a new workdir.
    for bad in ({"batch_size": -4}, {"batch_size": 0}):
        with pytest.raises(UserError, match="batch_size"):
            train.train_and_evaluate(resilient_config(**bad), finished)
        with pytest.raises(UserError, match="batch_size"):
            train.train_and_evaluate(resilient_config(**bad), tmp_path / "new" / "run")
    # A checkpoint of another model: refused after reading it; config.json stays the old one.
    with pytest.raises(UserError, match="does not fit this config"):
        train.train_and_evaluate(resilient_config(**{"model.widths": (8, 8, 8)}), finished)
    # A start that fails later (no training data for the batch size) in a new workdir.
    with pytest.raises(UserError, match="fewer than one batch"):
        train.train_and_evaluate(resilient_config(**{"data.num_train": 8}), tmp_path / "new2")
    # eval mode on a workdir without checkpoints.
    with pytest.raises(UserError, match="no checkpoint"):
        train.evaluate_checkpoint(resilient_config(), tmp_path / "new3" / "run")
    assert _snapshot(finished) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finished"]


def _make_the_loss_nan(monkeypatch, config):
    task_class = type(train.get_task(config))
    real = task_class.loss

    def nan_loss(self, *args, **kwargs):
        loss, aux = real(self, *args, **kwargs)
        return loss * np.nan, aux

    monkeypatch.setattr(task_class, "loss", nan_loss)


def test_the_nan_message_says_no_checkpoint_was_saved_when_none_was(tmp_path, monkeypatch):
    _make_the_loss_nan(monkeypatch, resilient_config())
    with pytest.raises(train.TrainingDiverged, match="nothing was saved"):
        train.train_and_evaluate(resilient_config(), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() or not _steps(
        tmp_path / "run", "checkpoints"
    )


def test_disk_full_during_a_save_is_one_line_and_keeps_the_older_checkpoint(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step >= 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.directory))
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    with pytest.raises(UserError) as error:
        train.train_and_evaluate(resilient_config(), workdir)
    message = str(error.value)
    assert "\n" not in message
    assert "checkpoint at step 4 could not be written" in message
    assert "No space left on device" in message and "free disk space" in message
    assert "the checkpoint at step 3 is kept" in message
    assert _steps(workdir, "checkpoints") == [3]


def test_a_save_the_disk_cannot_hold_is_refused_before_writing(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    real_usage = shutil.disk_usage

    def usage(path):
        total, used, free = real_usage(path)
        return type(real_usage(path))(total, used, 1000 if "checkpoints" in str(path) else free)

    train.train_and_evaluate(resilient_config(), workdir, stop_at_step=5)
    monkeypatch.setattr(shutil, "disk_usage", usage)
    with pytest.raises(
        UserError, match=r"checkpoint at step \d+ needs up to .* MiB .* but 0.0 MiB"
    ):
        train.train_and_evaluate(resilient_config(), workdir)
    assert _steps(workdir, "checkpoints") == [3, 4]
    assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]


def test_a_read_only_workdir_is_one_line(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(run_dir.LOCK_FILE):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(UserError, match="Read-only file system; use a --workdir on a writable"):
        train.train_and_evaluate(resilient_config(), tmp_path / "run")
    monkeypatch.undo()
    assert not (tmp_path / "run").exists()


def _write_birds(root):
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 8), ("valid", 2), ("test", 2)):
        for species in ("CROW", "DOVE"):
            folder = root / split / species
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png"
                )


def _truncate(image_file):
    image_file.write_bytes(image_file.read_bytes()[:60])  # cut off mid-pixels


def test_a_corrupt_image_is_named_in_one_line(tmp_path):
    _write_birds(tmp_path / "birds")
    broken = tmp_path / "birds" / "train" / "CROW" / "3.png"
    _truncate(broken)
    config = ml_collections.ConfigDict(dict(name="folder", root=str(tmp_path / "birds")))
    config.image_size = 16
    source = get_source(config, "train")
    with pytest.raises(UserError, match=rf"image file {broken} cannot be read .*replace or remove"):
        source.get(np.arange(len(source)))
    np.testing.assert_array_equal(source.get([0])["label"], [0])  # the others still read


def test_a_corrupt_image_met_mid_run_stops_the_run_with_its_work_saved(tmp_path):
    _write_birds(tmp_path / "birds")
    broken = tmp_path / "birds" / "valid" / "DOVE" / "1.png"
    _truncate(broken)
    config = load_config("configs/classification.py:birds,smoke")
    config.data.root = str(tmp_path / "birds")
    config.data.image_size = 16
    config.batch_size = config.eval_batch_size = 8
    # Training reads only train/; the first evaluation (step 3) meets the broken file.
    with pytest.raises(UserError) as error:
        train.train_and_evaluate(config, tmp_path / "run")
    assert str(error.value).startswith(f"image file {broken} cannot be read (")
    assert str(error.value).endswith("; replace or remove it (a checkpoint at step 3 is kept)")
    assert _steps(tmp_path / "run", "checkpoints") == [2, 3]  # 3: saved on the error


def test_a_carla_mask_of_another_size_is_an_error(tmp_path):
    from test_segmentation_data import _write_carla

    _write_carla(str(tmp_path), {"dataA": ["a0.png", "a1.png", "a2.png"]})
    mask = tmp_path / "dataA" / "CameraSeg" / "a1.png"
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(mask)
    config = ml_collections.ConfigDict(
        dict(name="carla", root=str(tmp_path), image_size=(12, 16), num_val=0, num_test=0)
    )
    source = get_source(config, "train")
    assert source.get([0])["label"].shape == (1, 12, 16)
    with pytest.raises(UserError, match=r"a1.png is 6x8 pixels but its image .* is 12x16"):
        source.get([1])


def test_history_drops_a_line_cut_short_and_the_lost_future(tmp_path):
    path = tmp_path / logs.HISTORY_FILE
    path.write_text('{"step": 2, "a": 1.0}\n{"step": 4, "a": 2.0}\n{"step": 6, "a"')
    history = logs.History(tmp_path, resume_step=4)
    assert [r["step"] for r in history.records] == [2, 4]
    history.append(6, {"a": 3.0})
    assert [r["step"] for r in _history(tmp_path)] == [2, 4, 6]


def _main(*args, cwd):
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "main.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_lock_sigterm_and_refused_resume(tmp_path):
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
    first = _main(*args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not (workdir / "metrics.jsonl").is_file() or not _history(workdir):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        second = _main(*args, cwd=tmp_path)
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
    refused = _main(*args, "--config.model.widths=(8, 8, 8)", cwd=tmp_path)
    _, err = refused.communicate(timeout=240)
    assert refused.returncode == 2
    assert "Traceback" not in err and "Event loop is closed" not in err
    assert "does not fit this config" in err.strip().splitlines()[-1]
    assert (workdir / "config.json").read_bytes() == config_before
    assert jax.device_count() == 4  # the CLI runs saw the same simulated devices (conftest)
