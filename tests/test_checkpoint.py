"""Checkpoints (dllab_jax/checkpoint.py): no non-finite state saved, and runs that survive a
kill at any save, a truncated or unreadable checkpoint and a full disk (through the loop's
resume path in train.py): each run test reproduces one way a run used to break."""

import errno
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dllab_jax import checkpoint, train
from dllab_jax.errors import UserError


def test_a_non_finite_state_is_never_saved(tmp_path, smoke_config):
    exp = train.build_experiment(smoke_config())
    state = exp.init_state_fn(jax.random.key(0))
    ckpts = checkpoint.RunCheckpoints(tmp_path)
    ckpts.save_latest(1, state, {})
    broken = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
    with pytest.raises(checkpoint.NonFiniteStateError):
        ckpts.save_latest(2, broken, {})
    ckpts.wait()
    assert ckpts.latest_step() == 1


@pytest.mark.slow
def test_kill_after_a_best_save_resumes(tmp_path, reference, resilient_config, run_files):
    # The defect: best/3 written, the next regular save at 50 never reached, the process
    # killed; every restart re-saved best/3 and crashed with StepAlreadyExistsError.
    workdir = tmp_path / "run"
    assert train.train_and_evaluate(resilient_config(), workdir, stop_at_step=3) == {}
    # A new best is saved as the latest too, first: a rerun starts at the best's step.
    steps = run_files.steps
    assert steps(workdir, "best") == [3] and steps(workdir, "checkpoints") == [3]
    # The state the defect left (a best newer than any latest, e.g. from an older version):
    shutil.rmtree(workdir / "checkpoints")
    summary = train.train_and_evaluate(resilient_config(), workdir)
    run_files.assert_same_run(workdir, summary, reference)
    assert [p.name.split("-")[:2] for p in (workdir / "set_aside").iterdir()] == [["best", "3"]]


class _Killed(BaseException):
    """Stands for SIGKILL at a chosen line: nothing after it runs, no handler sees it."""


@pytest.mark.slow
def test_kill_between_the_latest_and_the_best_save_of_one_step(
    tmp_path, reference, monkeypatch, resilient_config, run_files
):
    workdir = tmp_path / "run"

    def killed(*args, **kwargs):
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.RunCheckpoints, "save_best", killed)
        with pytest.raises(_Killed):
            train.train_and_evaluate(resilient_config(), workdir)
    assert run_files.steps(workdir, "checkpoints") == [3] and run_files.steps(workdir, "best") == []
    summary = train.train_and_evaluate(resilient_config(), workdir)
    run_files.assert_same_run(workdir, summary, reference)


@pytest.mark.slow
def test_a_truncated_latest_checkpoint_falls_back_to_the_older_one(
    tmp_path, reference, capsys, resilient_config, run_files
):
    workdir = tmp_path / "run"
    train.train_and_evaluate(resilient_config(), workdir, stop_at_step=9)
    _, newest = run_files.steps(workdir, "checkpoints")
    params = workdir / "checkpoints" / str(newest) / "params"
    data_files = sorted(params.rglob("ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)
    os.truncate(data_files[-1], 10)
    capsys.readouterr()
    summary = train.train_and_evaluate(resilient_config(), workdir)
    err = capsys.readouterr().err
    assert f"checkpoint step {newest} in" in err and "does not restore" in err
    assert "Exception ignored" not in err  # tensorstore's sibling failures stay quiet
    assert f"set aside checkpoints/{newest}" in err
    run_files.assert_same_run(workdir, summary, reference)


@pytest.mark.slow
def test_unreadable_checkpoints_are_one_error_and_left_untouched(
    tmp_path, resilient_config, run_files
):
    workdir = tmp_path / "run"
    train.train_and_evaluate(resilient_config(), workdir, stop_at_step=5)
    for step in run_files.steps(workdir, "checkpoints"):
        (workdir / "checkpoints" / str(step) / "meta" / "metadata").write_text("{half")
    before = run_files.snapshot(workdir)
    with pytest.raises(UserError, match=r"no checkpoint in .*checkpoints restores \(step 4"):
        train.train_and_evaluate(resilient_config(), workdir)
    assert run_files.snapshot(workdir) == before


@pytest.mark.slow
def test_disk_full_during_a_save_is_one_line_and_keeps_the_older_checkpoint(
    tmp_path, monkeypatch, resilient_config, run_files
):
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
    assert run_files.steps(workdir, "checkpoints") == [3]


@pytest.mark.slow
def test_a_save_the_disk_cannot_hold_is_refused_before_writing(
    tmp_path, monkeypatch, resilient_config, run_files
):
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
    assert run_files.steps(workdir, "checkpoints") == [3, 4]
    assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
