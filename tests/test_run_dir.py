"""The run directory (dllab_jax/run_dir.py): one process per workdir, a read-only workdir is
one line, and a refused start writes nothing."""

import errno
import os
import shutil
import time

import pytest

from dllab_jax import run_dir, train
from dllab_jax.errors import UserError


def test_a_second_process_in_one_workdir_stops_at_once(tmp_path, resilient_config):
    with run_dir.claim(tmp_path / "run"):
        start = time.monotonic()
        with pytest.raises(UserError, match=rf"is in use by pid {os.getpid()} on "):
            train.train_and_evaluate(resilient_config(), tmp_path / "run")
        assert time.monotonic() - start < 5
    # The lock went with its holder: the directory can be claimed again.
    with run_dir.claim(tmp_path / "run"):
        pass


def test_a_read_only_workdir_is_one_line(tmp_path, monkeypatch, resilient_config):
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


@pytest.mark.slow
def test_a_refused_start_writes_nothing(tmp_path, reference, resilient_config, run_files):
    ref_dir, _ = reference
    finished = tmp_path / "finished"
    shutil.copytree(ref_dir, finished)
    before = run_files.snapshot(finished)
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
    assert run_files.snapshot(finished) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finished"]
