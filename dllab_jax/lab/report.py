"""A sweep's report, built from its runs' workdirs alone (`summary.json`, `metrics.jsonl`,
`config.json` and the figures each run saved), so `--mode=report` rebuilds it without
training and it can collect runs made elsewhere (a cluster's array jobs).

Writes into the sweep directory `REPORT.md`, `report.json` (the same numbers, for the lab
report and for scripts) and `report/` (the PNGs the Markdown embeds: the rows' validation
curves overlaid, grouped bars of metric families, and copies of the runs' own figures).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from dllab_jax.lab import stats
from dllab_jax.lab.runner import PlannedRun, read_record
from dllab_jax.lab.spec import Sweep

FIGURE_DIR = "report"


@dataclasses.dataclass
class RowResult:
    """A row's finished runs: their summaries, histories and wall times (seconds)."""

    name: str
    runs: list[PlannedRun]
    summaries: list[dict]
    histories: list[list[dict]]
    wall_s: list[float]

    def estimate(self, metric: str) -> stats.Estimate | None:
        return stats.Estimate.of([s.get("metrics", {}).get(metric) for s in self.summaries])


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_history(path: Path) -> list[dict]:
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
    return records


def collect(sweep: Sweep, runs: Sequence[PlannedRun], sweep_dir: str | Path) -> list[RowResult]:
    """The finished runs of each row of `sweep` (rows without any are kept, empty)."""
    record = read_record(sweep_dir)["runs"]
    results = []
    for row in sweep.rows:
        result = RowResult(row.name, [], [], [], [])
        for run in runs:
            summary = _read_json(run.workdir / "summary.json") if run.row == row else None
            if summary is None:
                continue
            result.runs.append(run)
            result.summaries.append(summary)
            result.histories.append(_read_history(run.workdir / "metrics.jsonl"))
            wall = record.get(run.key, {}).get("wall_s", summary.get("train_time_s"))
            if wall is not None:
                result.wall_s.append(float(wall))
        results.append(result)
    return results


@dataclasses.dataclass
class SweepReport:
    """The numbers behind a sweep's report."""

    sweep: Sweep
    config_path: str
    rows: list[RowResult]
    verdicts: list[stats.Verdict]
    num_seeds: int
    command: str  # the command that rebuilds this report

    def to_json(self) -> dict:
        table = {}
        for result in self.rows:
            entry = {"seeds": len(result.summaries)}
            for metric in self.sweep.metrics:
                estimate = result.estimate(metric)
                if estimate is not None:
                    entry[metric] = dataclasses.asdict(estimate)
            entry["reference"] = dict(self.sweep.row(result.name).reference)
            table[result.name] = entry
        return {
            "experiment": self.sweep.experiment,
            "title": self.sweep.title,
            "config": self.config_path,
            "rows": table,
            "findings": [
                {
                    "claim": v.finding.claim,
                    "metric": v.finding.metric,
                    "status": v.status,
                    "comparisons": [c.describe() for c in v.comparisons],
                    "detail": v.detail,
                }
                for v in self.verdicts
            ],
        }


def build(
    sweep: Sweep,
    config_path: str,
    runs: Sequence[PlannedRun],
    sweep_dir: str | Path,
    command: str = "",
) -> SweepReport:
    """The report of the planned `runs` (rows not planned are left out), from their workdirs.
    `command` is the one that rebuilds it, quoted in the report."""
    planned = {run.row.name for run in runs}
    rows = [r for r in collect(sweep, runs, sweep_dir) if r.name in planned]
    verdicts = []
    for finding in sweep.findings:
        estimates = {r.name: r.estimate(finding.metric) for r in rows}
        verdicts.append(stats.check_finding(finding, estimates))
    num_seeds = max((run.seed + 1 for run in runs), default=0)
    command = command or f"python main.py --config={config_path} --mode=report"
    return SweepReport(sweep, config_path, rows, verdicts, num_seeds, command)


# ------------------------------------------------------------------ Markdown
def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.3f}"


def table_markdown(report: SweepReport) -> str:
    """Our mean ± std per metric beside the seed's number, with parameters and wall time."""
    sweep = report.sweep
    with_reference = [m for m in sweep.metrics if any(m in r.reference for r in sweep.rows)]
    header = ["row", "presets and overrides", "params", "wall time", "seeds"]
    for metric in sweep.metrics:
        header.append(metric)
        if metric in with_reference:
            header.append(f"{metric} (seed)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in report.rows:
        row = sweep.row(result.name)
        what = [row.preset] if row.preset else []
        what += [f"{k}={v}" for k, v in row.overrides.items()]
        params = result.summaries[0].get("num_params") if result.summaries else None
        wall = sum(result.wall_s) / len(result.wall_s) if result.wall_s else None
        cells = [
            row.label or row.name,
            f"`{', '.join(what)}`" if what else "(default)",
            f"{params:,}" if isinstance(params, int) else "",
            format_wall(wall),
            str(len(result.summaries)),
        ]
        for metric in sweep.metrics:
            estimate = result.estimate(metric)
            cells.append(estimate.format() if estimate else "not run")
            if metric in with_reference:
                cells.append(_cell(row.reference.get(metric)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_wall(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def findings_markdown(report: SweepReport) -> str:
    lines = []
    for verdict in report.verdicts:
        finding = verdict.finding
        lines.append(f"- **{verdict.status}**: {finding.claim} (`{finding.metric}`)")
        for comparison in verdict.comparisons:
            lines.append(f"  - {comparison.describe()}")
        if verdict.detail:
            lines.append(f"  - {verdict.detail}")
    return "\n".join(lines) if lines else "(this sweep states no finding)"


def commands_markdown(report: SweepReport, num_seeds: int) -> str:
    lines = ["```bash"]
    for result in report.rows:
        planned = [run for run in result.runs if run.seed == 0]
        if planned:
            lines.append(planned[0].shell_command())
    lines.append("```")
    if num_seeds > 1:
        lines.append(
            f"Seed k of {num_seeds} runs the same command with `--config.seed=k "
            "--config.data_seed=k` and `--workdir=<row>/seed<k>`."
        )
    return "\n".join(lines)


def write(report: SweepReport, runs: Sequence[PlannedRun], sweep_dir: str | Path) -> Path:
    """Writes REPORT.md, report.json and the figures into `sweep_dir`; returns REPORT.md."""
    from dllab_jax.lab import figures  # matplotlib only when a report is drawn

    sweep_dir = Path(sweep_dir)
    figure_dir = sweep_dir / FIGURE_DIR
    figure_dir.mkdir(parents=True, exist_ok=True)
    sweep = report.sweep
    parts = [
        f"# {sweep.experiment}: {sweep.title}",
        "",
        f"Generated {datetime.date.today().isoformat()} from the runs under this folder by "
        f"`{report.command}` ({report.num_seeds} "
        f"seed{'s' if report.num_seeds != 1 else ''} per row). Reference numbers: "
        f"{sweep.source}. A difference exceeds the spread when it is larger than the sum of "
        "the two rows' seed standard deviations.",
        "",
        "## Findings",
        findings_markdown(report),
        "",
        "## Table",
        table_markdown(report),
        "",
    ]
    if sweep.curve and figures.overlaid_curves(report.rows, sweep.curve, figure_dir / "curves.png"):
        parts += ["## Curves", f"![{sweep.curve} per row]({FIGURE_DIR}/curves.png)", ""]
    for family in sweep.bars:
        name = "bars_" + family.strip("/").replace("/", "_") + ".png"
        if figures.grouped_bars(report.rows, family, figure_dir / name):
            parts += [f"## {family}*", f"![{family} per row]({FIGURE_DIR}/{name})", ""]
    for figure in sweep.figures:
        cells = []
        for result in report.rows:
            source = result.runs[0].workdir / figure if result.runs else None
            if source is not None and source.is_file():
                target = figure_dir / f"{result.name}_{figure}"
                shutil.copyfile(source, target)
                cells.append((result.name, f"![{result.name}]({FIGURE_DIR}/{target.name})"))
        if cells:
            parts += [
                f"## {figure} (seed 0 of each row)",
                "| " + " | ".join(name for name, _ in cells) + " |",
                "|" + "---|" * len(cells),
                "| " + " | ".join(image for _, image in cells) + " |",
                "",
            ]
    parts += ["## Commands", commands_markdown(report, report.num_seeds), ""]
    path = sweep_dir / "REPORT.md"
    path.write_text("\n".join(parts))
    (sweep_dir / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return path
