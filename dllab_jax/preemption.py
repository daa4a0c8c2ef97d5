"""Stopping on SIGTERM / SIGINT the way schedulers expect: finish the step, save, exit.

SLURM, Kubernetes and cloud preemption send SIGTERM and, after a grace period, SIGKILL; Ctrl-C
sends SIGINT. While `StopSignals` is active, the first of either only records the request: the
training loop finishes its current step (and the evaluation or save it is in), saves a
checkpoint, flushes its logs and raises `Interrupted`, which `main.py` turns into one line and
exit code 128 + signal (143 for SIGTERM, 130 for SIGINT), the shell convention. A second
signal restores the default action, so pressing Ctrl-C twice still stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading

from dllab_jax.errors import Stopped

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Stopped):
    """The run stopped on a signal, after saving what it had (see the module docstring)."""

    def __init__(self, signum: int, step: int, saved: bool):
        self.signum, self.step, self.saved = signum, step, saved
        what = "checkpoint saved" if saved else "nothing new to save"
        super().__init__(
            f"interrupted at step {step} ({signal.Signals(signum).name}); {what}; rerun the "
            "same command to resume"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Context manager: SIGTERM / SIGINT set `requested` instead of killing the process.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        del frame
        if self.requested is not None:  # a second signal: the default action, now
            self._restore()
            signal.raise_signal(signum)
            return
        self.requested = signum
        print(
            f"received {signal.Signals(signum).name}: finishing the current step, then saving "
            "a checkpoint (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
