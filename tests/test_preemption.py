"""Stop signals (dllab_jax/preemption.py): SIGTERM or SIGINT saves, exits with 128 + the
signal, and a resume equals the uninterrupted run."""

import os
import signal

import pytest

from dllab_jax import logs, preemption, train


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


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_then_resume_equals_the_uninterrupted_run(
    tmp_path, reference, monkeypatch, signum, resilient_config, run_files
):
    workdir = tmp_path / "run"
    # What was installed before (SIGINT is ignored in a process started in the background).
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
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
    assert run_files.steps(workdir, "checkpoints")[-1] == 5
    # The handlers are restored once the run is over.
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    # Step 5 is inside the train window 5..8: its metrics travel with the checkpoint, so the
    # window logged at 8 averages the same four steps as the uninterrupted run's.
    summary = train.train_and_evaluate(resilient_config(), workdir)
    run_files.assert_same_run(workdir, summary, reference)
