"""`main.py --mode=sweep|report` and `python -m dllab_jax.lab`: the lab's two entry points.

    python main.py --config=configs/seg_heads.py --mode=sweep [--sweep.seeds=3]
        [--sweep.rows=linear,conv] [--sweep.print_commands] [--workdir=<sweep dir>]
        [--config.<key>=<value> ...]
    python main.py --config=configs/seg_heads.py --mode=report [--sweep.seeds=3]

Presets given with the config (`configs/seg_heads.py:smoke`) are added to every row; the
`--config.*` flags are passed on to every run. The sweep directory defaults to
`checkpoints/sweeps/<config>[-<presets>]`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from dllab_jax import config_utils
from dllab_jax.lab import report, runner, spec


def default_sweep_dir(config_spec: str) -> Path:
    return Path("checkpoints") / "sweeps" / Path(config_utils.default_workdir(config_spec)).name


def plan(config_spec: str, sweep_dir: str | Path, *, seeds: int, rows=(), extra_args=()):
    """(the sweep, its planned runs) for a config spec."""
    config_path, base_presets = config_utils.split_spec(config_spec)
    sweep = spec.load_sweep(config_path)
    runs = runner.plan_runs(
        sweep,
        config_path,
        sweep_dir,
        seeds=seeds,
        base_presets=base_presets,
        extra_args=extra_args,
        rows=rows,
    )
    return sweep, runs


def sweep_or_report(
    config_spec: str,
    mode: str,
    *,
    sweep_dir: str | Path | None = None,
    seeds: int = 1,
    rows: str = "",
    print_commands: bool = False,
    extra_args=(),
) -> report.SweepReport | None:
    """Runs (mode 'sweep') and reports, or only reports (mode 'report'), one config's sweep;
    with `print_commands`, prints one command per row and seed instead and returns None."""
    sweep_dir = Path(sweep_dir) if sweep_dir else default_sweep_dir(config_spec)
    row_names = tuple(n for n in rows.split(",") if n)
    sweep, runs = plan(
        config_spec, sweep_dir, seeds=seeds, rows=row_names, extra_args=tuple(extra_args)
    )
    if print_commands:
        for run in runs:
            print(run.shell_command())
        return None
    if mode == "sweep":
        runner.run_planned(runs, sweep_dir)
    config_path = config_utils.split_spec(config_spec)[0]
    rebuild = [f"--config={config_spec}", "--mode=report", f"--workdir={sweep_dir}"]
    rebuild += [f"--sweep.seeds={seeds}"] + ([f"--sweep.rows={rows}"] if rows else [])
    rebuild += list(extra_args)
    command = shlex.join(["python", "main.py", *rebuild])
    built = report.build(sweep, config_path, runs, sweep_dir, command)
    path = report.write(built, runs, sweep_dir)
    for verdict in built.verdicts:
        print(f"{verdict.status}: {verdict.finding.claim}")
    print(f"report: {path}")
    return built
