"""Plans and runs a sweep: every row x seed as one `main.py` run in its own workdir.

Each run is the same command a user (or a cluster job, `--sweep.print_commands`) would type,
run as a child process: its workdir is `<sweep dir>/<row>/seed<k>`, seed k sets `config.seed`
and `config.data_seed` to k (the data set itself stays the same), and what the user added on
the command line (`--config.<key>=<value>`) comes after the row's own overrides. A run whose
workdir holds a `summary.json` is finished and reused; any other is started, or resumed from
its checkpoint by the training loop. `<sweep dir>/sweep.json` records the command each run
was made with: a workdir made by another command is refused, never reused or overwritten.

SIGINT and SIGTERM are passed on to the running child, which saves and stops (see
`dllab_jax.preemption`); the sweep then stops with the same exit code, and rerunning it
resumes there.
"""

from __future__ import annotations

import dataclasses
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dllab_jax import config_utils
from dllab_jax.checkpoint import write_json
from dllab_jax.errors import Stopped, UserError
from dllab_jax.lab.spec import Row, Sweep

RECORD = "sweep.json"
MAIN = config_utils.REPO_ROOT / "main.py"


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One row at one seed: its workdir and the `main.py` arguments that make it."""

    row: Row
    seed: int
    workdir: Path
    args: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.row.name}/seed{self.seed}"

    @property
    def finished(self) -> bool:
        return (self.workdir / "summary.json").is_file()

    def shell_command(self) -> str:
        """The command line, as a user would type it from the repository root."""
        return shlex.join(["python", "main.py", *self.args])


def _flag_value(value) -> str:
    """A config value as `config_flags` parses it back (tuples as '(1, 2)')."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list | tuple):
        return repr(tuple(value))
    return str(value)


def row_spec(config_path: str, base_presets: str, row: Row) -> str:
    """'configs/x.py:<row presets>,<presets given on the command line>'."""
    presets = ",".join(p for p in (row.preset, base_presets) if p)
    return f"{config_path}:{presets}" if presets else config_path


def plan_runs(
    sweep: Sweep,
    config_path: str,
    sweep_dir: str | Path,
    *,
    seeds: int = 1,
    base_presets: str = "",
    extra_args: Sequence[str] = (),
    rows: Sequence[str] = (),
) -> list[PlannedRun]:
    """Every (row, seed) of `sweep`, rows in declaration order, then seeds.

    Args:
      sweep: the config's declaration.
      config_path: the config file ('configs/seg_heads.py').
      sweep_dir: where the rows' workdirs go.
      seeds: runs per row, seeds 0 .. seeds - 1.
      base_presets: presets added to every row (e.g. 'smoke').
      extra_args: `--config.<key>=<value>` flags added to every run, last.
      rows: the rows to run (names; () = all).
    """
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise UserError(f"--sweep.seeds must be a positive integer, got {seeds!r}")
    names = [row.name for row in sweep.rows]
    unknown = sorted(set(rows) - set(names))
    if unknown:
        raise UserError(f"--sweep.rows names unknown rows {unknown}; this sweep has {names}")
    for arg in extra_args:
        if not arg.startswith("--config."):
            raise UserError(f"a sweep passes on only --config.<key>=<value> flags, got {arg!r}")
        if arg.split("=", 1)[0] in ("--config.seed", "--config.data_seed"):
            raise UserError(
                f"{arg}: a sweep sets config.seed and config.data_seed to each run's seed; "
                "choose how many with --sweep.seeds"
            )
    sweep_dir = Path(sweep_dir)
    runs = []
    for row in sweep.rows:
        if rows and row.name not in rows:
            continue
        overrides = [f"--config.{k}={_flag_value(v)}" for k, v in row.overrides.items()]
        for seed in range(seeds):
            workdir = sweep_dir / row.name / f"seed{seed}"
            args = (
                f"--config={row_spec(config_path, base_presets, row)}",
                f"--workdir={workdir}",
                f"--config.seed={seed}",
                f"--config.data_seed={seed}",
                *overrides,
                *extra_args,
            )
            runs.append(PlannedRun(row, seed, workdir, args))
    return runs


def read_record(sweep_dir: str | Path) -> dict:
    """`sweep.json`: {"runs": {"<row>/seed<k>": {"args": [...], "wall_s": ...}}}."""
    import json

    path = Path(sweep_dir) / RECORD
    if not path.is_file():
        return {"runs": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); delete it to start afresh") from None


def check_reusable(runs: Sequence[PlannedRun], record: dict) -> None:
    """Refuses to run into a workdir that another command made."""
    for run in runs:
        made_by = record["runs"].get(run.key, {}).get("args")
        if made_by is not None and list(made_by) != list(run.args):
            raise UserError(
                f"{run.workdir} holds a run made by another command ({shlex.join(made_by)}); "
                "use another --workdir for this sweep, or delete that folder"
            )


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class _ForwardSignals:
    """While a child runs, SIGINT / SIGTERM reach it once each (it runs in its own session,
    so a terminal's Ctrl-C reaches the sweep alone) and are remembered."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.received: int | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        del frame
        self.received = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class SweepStopped(Stopped):
    """A run failed or the sweep was interrupted; `exit_code` is the run's (or 128 + signal)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def run_planned(
    runs: Sequence[PlannedRun],
    sweep_dir: str | Path,
    *,
    echo: Callable[[str], None] = print,
    python: str = sys.executable,
) -> None:
    """Runs the unfinished `runs` one after the other, with one progress line over the sweep
    before each run's own output.

    Raises:
      UserError: a workdir made by another command.
      SweepStopped: a run failed or a signal stopped the sweep (rerun to resume).
    """
    sweep_dir = Path(sweep_dir)
    record = read_record(sweep_dir)
    check_reusable(runs, record)
    reused = [run for run in runs if run.finished]
    todo = [run for run in runs if not run.finished]
    start, timed = time.monotonic(), []
    with _ForwardSignals() as signals:
        for index, run in enumerate(todo):
            if signals.received is not None:
                break
            done = len(reused) + index
            # The median run time: the first run may include a pre-training it made first.
            eta = (
                f"ETA {_duration(statistics.median(timed) * (len(todo) - index))}"
                if timed
                else "ETA after the first run"
            )
            width = 20
            filled = round(width * done / len(runs))
            echo(
                f"sweep [{'#' * filled}{'-' * (width - filled)}] {done}/{len(runs)} runs done "
                f"({len(reused)} reused) | now {run.key} | elapsed "
                f"{_duration(time.monotonic() - start)} | {eta}"
            )
            sweep_dir.mkdir(parents=True, exist_ok=True)
            record["runs"][run.key] = {"args": list(run.args)}
            write_json(sweep_dir / RECORD, record)
            began = time.monotonic()
            signals.child = subprocess.Popen(
                [python, str(MAIN), *run.args], cwd=Path.cwd(), start_new_session=True
            )
            code = signals.child.wait()
            signals.child = None
            wall = time.monotonic() - began
            if code != 0:
                raise SweepStopped(
                    f"sweep stopped: {run.key} exited with status {code} (see above); rerun the "
                    "sweep to resume",
                    code,
                )
            timed.append(wall)
            record["runs"][run.key]["wall_s"] = round(wall, 1)
            write_json(sweep_dir / RECORD, record)
        if signals.received is not None:
            raise SweepStopped(
                f"sweep stopped on {signal.Signals(signals.received).name}; rerun it to resume",
                128 + signals.received,
            )
    echo(
        f"sweep: {len(runs)} runs done ({len(reused)} reused, {len(todo)} run in "
        f"{_duration(time.monotonic() - start)})"
    )
