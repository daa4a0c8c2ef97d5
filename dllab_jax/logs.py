"""Logging behind one module: TensorBoard event files and console lines, a progress line,
and the run's metric history as JSON lines (the source of the curves and of early stopping
on resume).

The event files are written with TensorBoard's own `EventFileWriter` (the one
`torch.utils.tensorboard` uses): pure Python on top of the `tensorboard` package, so a run
needs no TensorFlow. clu's writers would need it (`clu.metric_writers` imports TensorFlow's
summary writer when imported), and tensorboardX would add a dependency that says nothing
more. Everything a run logs goes through `MetricWriter`, so another backend is one class.
"""

from __future__ import annotations

import json
import logging as py_logging
import math
import time
from pathlib import Path

import numpy as np
from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter

HISTORY_FILE = "metrics.jsonl"

# Libraries whose INFO lines (every orbax save, jax's backend probing) drown the run's own.
_QUIET_BELOW_WARNING = ("/orbax/", "/jax/_src/xla_bridge.py")


class _LibraryInfoFilter(py_logging.Filter):
    def filter(self, record: py_logging.LogRecord) -> bool:
        if record.levelno >= py_logging.WARNING:
            return True
        return not any(part in record.pathname for part in _QUIET_BELOW_WARNING)


def quiet_library_logs() -> None:
    """Keeps library INFO chatter out of the console; warnings and errors still show."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
        handler.addFilter(_LibraryInfoFilter())


class MetricWriter:
    """Scalars and hyperparameters to `<workdir>/events.out.tfevents.*` and the console."""

    def __init__(self, workdir: str | Path):
        # flush_secs: TensorBoard shows a live run within seconds; `flush` forces it.
        self._events = EventFileWriter(str(workdir), flush_secs=10)

    def _write(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        event = event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
        )
        self._events.add_event(event)

    def write_scalars(self, step: int, scalars: dict) -> None:
        values = [
            summary_pb2.Summary.Value(tag=k, simple_value=float(np.asarray(v)))
            for k, v in scalars.items()
        ]
        self._write(step, values)
        line = ", ".join(f"{k}={float(np.asarray(v)):.6g}" for k, v in sorted(scalars.items()))
        logging.info("[%d] %s", step, line)

    def write_hparams(self, hparams: dict) -> None:
        """The config as a Markdown table in TensorBoard's Text tab (step 0)."""
        rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(hparams.items()))
        table = "| key | value |\n|---|---|\n" + rows
        metadata = text_metadata.create_summary_metadata(display_name="", description="")
        tensor = tensor_pb2.TensorProto(
            dtype=7, string_val=[table.encode()], tensor_shape={"dim": [{"size": 1}]}
        )
        value = summary_pb2.Summary.Value(tag="hparams", metadata=metadata, tensor=tensor)
        self._write(0, [value])
        logging.info("[hyperparameters] %s", hparams)

    def flush(self) -> None:
        self._events.flush()

    def close(self) -> None:
        self._events.close()


class NullWriter(MetricWriter):
    """The writer of processes other than 0 in a multi-process run: they write nothing."""

    def __init__(self):
        pass

    def _write(self, step: int, values) -> None:
        pass

    def write_scalars(self, step: int, scalars: dict) -> None:
        pass

    def write_hparams(self, hparams: dict) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def create_writer(workdir: str | Path, enabled: bool = True) -> MetricWriter:
    """TensorBoard event files in `workdir` plus one console line per write (a `NullWriter`
    when not `enabled`: a process other than 0)."""
    return MetricWriter(workdir) if enabled else NullWriter()


class ProgressReporter:
    """Every `every_steps` steps: steps/s since the last report, the fraction done and the ETA,
    to the console and (steps_per_sec) to TensorBoard."""

    def __init__(self, num_train_steps: int, writer: MetricWriter, every_steps: int):
        self.total, self.writer, self.every = num_train_steps, writer, every_steps
        self._last: tuple[int, float] | None = None

    def __call__(self, step: int) -> None:
        if isinstance(self.writer, NullWriter):  # a process other than 0 says nothing
            return
        now = time.monotonic()
        if self._last is None:  # the first call times nothing: it follows compilation
            self._last = (step, now)
            return
        if step % self.every and step != self.total:
            return
        last_step, last_time = self._last
        self._last = (step, now)
        if step <= last_step or now <= last_time:
            return
        rate = (step - last_step) / (now - last_time)
        eta = (self.total - step) / rate
        self.writer.write_scalars(step, {"steps_per_sec": rate})
        logging.info(
            "%.1f steps/s, %.1f%% (%d/%d), ETA: %dm%02ds",
            rate,
            100 * step / self.total,
            step,
            self.total,
            eta // 60,
            eta % 60,
        )


def progress_reporter(num_train_steps: int, writer: MetricWriter, every_steps: int):
    """Logs steps/s, the fraction done and the ETA every `every_steps` steps."""
    return ProgressReporter(num_train_steps, writer, every_steps)


class History:
    """Scalars per step, appended to `<workdir>/metrics.jsonl`.

    On resume the records after the restored step are dropped, so the file always describes
    the state in the latest checkpoint's timeline. The rewrite is atomic (a temporary file
    renamed over the old one), and a last line cut short by a kill is dropped with the rest
    of that lost future.
    """

    def __init__(self, workdir: str | Path, resume_step: int | None, write: bool = True):
        """
        Args:
          workdir: the run's folder.
          resume_step: the step the run resumes from (None: a fresh start, no records).
          write: False reads the records without writing (processes other than 0).
        """
        self.path = Path(workdir) / HISTORY_FILE
        self.write = write
        self.records: list[dict] = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # half a line: the process died writing it
                    continue
                if isinstance(record, dict) and record.get("step", math.inf) <= resume_step:
                    self.records.append(record)
        if not write:
            return
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w") as f:
            for record in self.records:
                f.write(json.dumps(record) + "\n")
        tmp.replace(self.path)

    def append(self, step: int, scalars: dict[str, float]) -> None:
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self.records.append(record)
        if not self.write:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def values(self, key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in self.records if key in r]
