"""`python -m dllab_jax.lab`: every experiment's offline sweep, in order, and one REPORT.md.

    python -m dllab_jax.lab [--seeds=3] [--only=E1,E4] [--dir=checkpoints/lab] [--smoke]
                            [--report_only] [--print_commands]

Each config that declares a comparison (`get_sweep()`, see `dllab_jax.lab.spec`) runs as
`main.py --mode=sweep` would, into `<dir>/<config>`; finished runs are reused, so a second
call only rebuilds the reports. `<dir>/REPORT.md` has a section per experiment (E1-E7): the
findings with their verdicts, the table, and a link to the sweep's own report. `--smoke` adds
the `smoke` preset to every row (a check that the whole lab runs, in minutes; its numbers
mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from dllab_jax import config_utils
from dllab_jax.errors import UserError, one_line_errors
from dllab_jax.lab import report, runner, spec


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dllab_jax.lab", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=1, help="runs per row (default 1)")
    parser.add_argument("--only", default="", help="experiments to run, e.g. E1,E4 (default all)")
    parser.add_argument("--dir", default="checkpoints/lab", help="where the sweeps go")
    parser.add_argument("--smoke", action="store_true", help="tiny runs (checks the lab runs)")
    parser.add_argument("--report_only", action="store_true", help="rebuild reports, train nothing")
    parser.add_argument("--print_commands", action="store_true", help="print every run's command")
    return parser.parse_args(argv)


def _section(built: report.SweepReport, sweep_dir: Path, lab_dir: Path) -> str:
    link = os.path.relpath(sweep_dir / "REPORT.md", lab_dir)
    return "\n".join(
        [
            f"## {built.sweep.experiment}: {built.sweep.title}",
            f"`{built.config_path}`, {built.num_seeds} seed(s) per row; the sweep's own report, "
            f"with its figures and commands: [{link}]({link}).",
            "",
            report.findings_markdown(built),
            "",
            report.table_markdown(built),
            "",
        ]
    )


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    lab_dir = Path(args.dir)
    only = {e.strip().upper() for e in args.only.split(",") if e.strip()}
    configs = spec.sweep_configs()
    sweeps = [(path, spec.load_sweep(path)) for path in configs]
    if only:
        unknown = sorted(only - {s.experiment for _, s in sweeps})
        if unknown:
            raise UserError(
                f"--only names {unknown}; the lab has {sorted({s.experiment for _, s in sweeps})}"
            )
        sweeps = [(path, s) for path, s in sweeps if s.experiment in only]
    sections, start, timings = [], time.monotonic(), []
    for path, sweep in sweeps:
        config_spec = f"{path}:smoke" if args.smoke else path
        sweep_dir = lab_dir / Path(config_utils.default_workdir(config_spec)).name
        runs = runner.plan_runs(
            sweep, path, sweep_dir, seeds=args.seeds, base_presets="smoke" if args.smoke else ""
        )
        if args.print_commands:
            for run in runs:
                print(run.shell_command())
            continue
        began = time.monotonic()
        if not args.report_only:
            print(f"lab: {sweep.experiment} {path} ({len(runs)} runs) -> {sweep_dir}", flush=True)
            runner.run_planned(runs, sweep_dir)
        command = shlex.join(["python", "-m", "dllab_jax.lab", *argv, "--report_only"])
        built = report.build(sweep, path, runs, sweep_dir, command)
        report.write(built, runs, sweep_dir)
        timings.append((sweep.experiment, path, time.monotonic() - began))
        sections.append(_section(built, sweep_dir, lab_dir))
    if args.print_commands:
        return 0
    total = time.monotonic() - start
    lines = [
        "# dllab_jax lab report",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='minutes')} by `python -m "
        f"dllab_jax.lab {' '.join(argv)}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPU cores, Python {platform.python_version()}). Wall time of this "
        f"call: {report.format_wall(total)}"
        + (" (reports only; the runs' own times are in the tables)" if args.report_only else "")
        + ".",
        "",
        "| experiment | config | wall time of this call |",
        "|---|---|---|",
        *[f"| {e} | `{p}` | {report.format_wall(t)} |" for e, p, t in timings],
        "",
        *sections,
    ]
    lab_dir.mkdir(parents=True, exist_ok=True)
    (lab_dir / "REPORT.md").write_text("\n".join(lines))
    print(f"lab report: {lab_dir / 'REPORT.md'} ({report.format_wall(total)})")
    return 0


if __name__ == "__main__":
    with one_line_errors():
        sys.exit(main(sys.argv[1:]))
