"""Logging behind one module: clu writers (TensorBoard + console), progress, and the run's
metric history as JSON lines (the source of the curves and of early stopping on resume).

clu is imported here and nowhere else, so it can be swapped in one place.
"""

from __future__ import annotations

import json
import logging as py_logging
import math
from pathlib import Path

from absl import logging
from clu import metric_writers, periodic_actions

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


def create_writer(workdir: str | Path):
    """TensorBoard event files in `workdir` plus one console line per write."""
    return metric_writers.create_default_writer(str(workdir), asynchronous=False)


def progress_reporter(num_train_steps: int, writer, every_steps: int):
    """Logs steps/s, the fraction done and the ETA (clu's ReportProgress)."""
    return periodic_actions.ReportProgress(
        num_train_steps=num_train_steps, writer=writer, every_steps=every_steps
    )


class History:
    """Scalars per step, appended to `<workdir>/metrics.jsonl`.

    On resume the records after the restored step are dropped, so the file always describes
    the state in the latest checkpoint's timeline. The rewrite is atomic (a temporary file
    renamed over the old one), and a last line cut short by a kill is dropped with the rest
    of that lost future.
    """

    def __init__(self, workdir: str | Path, resume_step: int | None):
        self.path = Path(workdir) / HISTORY_FILE
        self.records: list[dict] = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # half a line: the process died writing it
                    continue
                if isinstance(record, dict) and record.get("step", math.inf) <= resume_step:
                    self.records.append(record)
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w") as f:
            for record in self.records:
                f.write(json.dumps(record) + "\n")
        tmp.replace(self.path)

    def append(self, step: int, scalars: dict[str, float]) -> None:
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def values(self, key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in self.records if key in r]
