"""What a config file declares about its comparison: `Sweep`, `Row`, `Finding`.

A config file that has a comparison defines

    def get_sweep() -> Sweep:
        return Sweep(
            experiment="E4",
            title="Heads on a frozen pretrained ViT",
            rows=(Row("linear", "linear", reference={"val/miou": 0.42}), ...),
            metrics=("val/miou", "test/miou"),
            findings=(Finding("The transformer head beats conv, which beats linear.",
                              "val/miou", order=("transformer", "conv", "linear")),),
            curve="val/miou",
        )

and `python main.py --config=configs/seg_heads.py --mode=sweep` runs it. Reference numbers are
the handout's or the seed report's (`shared/SPEC.md`), in the units of our metrics (fractions,
not percent).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from dllab_jax import config_utils
from dllab_jax.errors import UserError

_ROW_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the comparison: the config with some presets and overrides.

    Attributes:
      name: the row's label and its folder in the sweep directory (letters, digits, `_.-`).
      preset: presets added to the config spec's, e.g. "conv" or "resnet18,aug" ("" = none).
      overrides: `--config.<key>=<value>` pairs, e.g. {"optimizer.learning_rate": 1e-4}.
      reference: the seed's number for this row, by metric name (as in `summary.json`).
      label: a longer description for the table ("" = the preset).
    """

    name: str
    preset: str = ""
    overrides: Mapping[str, object] = dataclasses.field(default_factory=dict)
    reference: Mapping[str, float] = dataclasses.field(default_factory=dict)
    label: str = ""


@dataclasses.dataclass(frozen=True)
class Finding:
    """A claim of the seed report, checked against our rows.

    Either an ordering (`order`: row names best first; a tuple of names = rows the seed found
    about equal) or a bar (`at_least`: every row in `rows` reaches it on `metric`).

    Attributes:
      claim: the finding in one sentence, as the seed states it.
      metric: the summary metric it is about, e.g. "val/miou".
      order: rows from best to worst.
      at_least: the bar each row in `rows` must reach.
      rows: the rows `at_least` applies to (() = all rows).
      higher_is_better: False for losses and ranks.
    """

    claim: str
    metric: str
    order: Sequence[str | tuple[str, ...]] = ()
    at_least: float | None = None
    rows: Sequence[str] = ()
    higher_is_better: bool = True


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A config's comparison.

    Attributes:
      experiment: "E1" .. "E7" (the lab report's section).
      title: a heading for the report.
      rows: the rows, in table order.
      metrics: the table's columns (summary metric names).
      findings: what the seed found, checked by the report.
      curve: the `metrics.jsonl` key whose curves the report overlays, e.g. "val/miou".
      bars: metric families drawn as grouped bars per row, as prefixes ("val/iou/").
      figures: run figures shown side by side, one per row (file names in a workdir).
      source: where the reference numbers come from.
    """

    experiment: str
    title: str
    rows: Sequence[Row]
    metrics: Sequence[str]
    findings: Sequence[Finding] = ()
    curve: str = ""
    bars: Sequence[str] = ()
    figures: Sequence[str] = ()
    source: str = "shared/SPEC.md"

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)


def check_sweep(sweep: Sweep, where: str) -> None:
    """Raises ValueError for a declaration that cannot be run (a programming error)."""
    names = [row.name for row in sweep.rows]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{where}: a sweep needs rows with distinct names, got {names}")
    for name in names:
        if not _ROW_NAME.match(name):
            raise ValueError(f"{where}: row name {name!r} must be letters, digits or _.-")
    for finding in sweep.findings:
        named = [n for item in finding.order for n in ((item,) if isinstance(item, str) else item)]
        unknown = sorted((set(named) | set(finding.rows)) - set(names))
        if unknown:
            raise ValueError(f"{where}: finding {finding.claim!r} names unknown rows {unknown}")
        if bool(finding.order) == (finding.at_least is not None):
            raise ValueError(f"{where}: finding {finding.claim!r} needs `order` or `at_least`")


def load_sweep(config_path: str) -> Sweep:
    """The `Sweep` a config file declares in `get_sweep()`."""
    module = config_utils.load_config_module(config_path)
    if not hasattr(module, "get_sweep"):
        raise UserError(
            f"{config_path} declares no comparison (no get_sweep()); the configs with one: "
            f"{', '.join(sweep_configs())}"
        )
    sweep = module.get_sweep()
    check_sweep(sweep, config_path)
    return sweep


def sweep_configs(config_dir: str | Path | None = None) -> list[str]:
    """The config files (repository-relative paths) that declare a comparison, in
    experiment order (E1 first), then by name."""
    default = config_dir is None
    config_dir = config_utils.REPO_ROOT / "configs" if default else Path(config_dir)
    found = []
    for path in sorted(config_dir.glob("*.py")):
        if "def get_sweep(" not in path.read_text():
            continue
        sweep = config_utils.load_config_module(str(path)).get_sweep()
        name = f"configs/{path.name}" if default else str(path)
        found.append((sweep.experiment, path.name, name))
    return [spec for _, _, spec in sorted(found)]
