"""The sweep report's own figures: rows' curves overlaid, metric families as grouped bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def overlaid_curves(rows: Sequence, key: str, path: Path) -> bool:
    """`key` (a metrics.jsonl scalar) against step, one line per row (the mean over its seeds
    at the steps they share, a band of one std); False when no row logged it."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = False
    for row in rows:
        per_seed = [{r["step"]: r[key] for r in history if key in r} for history in row.histories]
        per_seed = [points for points in per_seed if points]
        if not per_seed:
            continue
        steps = sorted(set.intersection(*(set(points) for points in per_seed)))
        if not steps:
            continue
        values = np.array([[points[s] for s in steps] for points in per_seed])
        mean = values.mean(axis=0)
        (line,) = ax.plot(steps, mean, marker="o", ms=3, label=f"{row.name} (n={len(per_seed)})")
        if len(per_seed) > 1:
            std = values.std(axis=0, ddof=1)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def grouped_bars(rows: Sequence, family: str, path: Path) -> bool:
    """The metrics named `family<member>` (e.g. 'val/iou/' + class), one bar per row and
    member (mean over seeds, error bar one std); False when no row has any."""
    members = sorted(
        {
            name[len(family) :]
            for row in rows
            for summary in row.summaries
            for name in summary.get("metrics", {})
            if name.startswith(family)
        },
        key=lambda m: (0, int(m), "") if m.isdigit() else (1, 0, m),  # R@1, R@5, R@10
    )
    drawn_rows = [row for row in rows if row.summaries]
    if not members or not drawn_rows:
        return False
    width = 0.8 / len(drawn_rows)
    x = np.arange(len(members))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(members) * len(drawn_rows) ** 0.5), 4))
    for i, row in enumerate(drawn_rows):
        estimates = [row.estimate(family + member) for member in members]
        means = [e.mean if e else np.nan for e in estimates]
        errors = [e.spread if e else 0.0 for e in estimates]
        offset = (i - (len(drawn_rows) - 1) / 2) * width
        ax.bar(x + offset, means, width, yerr=errors, label=row.name)
    ax.set_xticks(x, members, rotation=45, ha="right", fontsize=8)
    ax.set_title(family + "*")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
