"""The lab: each experiment's comparison as a sweep of runs, and its report.

A config file declares its comparison in `get_sweep()` (a `Sweep` of `Row`s, the metrics to
tabulate, the seed report's numbers and the `Finding`s to check); `main.py --mode=sweep` runs
it (rows x seeds, each a `main.py` run in its own workdir, finished ones reused, unfinished
ones resumed), `--mode=report` rebuilds its report from the workdirs alone, and
`python -m dllab_jax.lab` does both for every experiment and writes one `REPORT.md`.

Modules: `spec` (the declarations), `runner` (plans and runs the rows), `stats` (means, spreads
and the ordering verdicts), `report` (the Markdown and its figures).
"""

from dllab_jax.lab.spec import Finding, Row, Sweep

__all__ = ["Finding", "Row", "Sweep"]
