"""A sweep's report from hand-made workdirs: the table's means, stds and reference column,
the verdicts, the figures and report.json."""

import json

import pytest

from dllab_jax.lab import report, runner, stats
from dllab_jax.lab.spec import Finding, Row, Sweep

SWEEP = Sweep(
    experiment="E9",
    title="three heads",
    rows=(
        Row("big", "big", reference={"val/miou": 0.62}, label="big head"),
        Row("small", "small", reference={"val/miou": 0.48}),
        Row("tiny", "tiny", overrides={"model.width": 4}),
    ),
    metrics=("val/miou", "test/miou"),
    findings=(
        Finding("big > small > tiny", "val/miou", order=("big", "small", "tiny")),
        Finding("small beats big on test", "test/miou", order=("small", "big")),
    ),
    curve="val/miou",
    bars=("val/iou/",),
    figures=("predictions_val.png",),
)
# Hand-made final val mIoU per (row, seed), test mIoU = val - 0.01.
VAL = {"big": (0.60, 0.62), "small": (0.50, 0.52), "tiny": (0.30, 0.36)}


@pytest.fixture
def sweep_dir(tmp_path):
    runs = runner.plan_runs(SWEEP, "configs/heads.py", tmp_path, seeds=2)
    for run in runs:
        value = VAL[run.row.name][run.seed]
        run.workdir.mkdir(parents=True)
        metrics = {"val/miou": value, "test/miou": value - 0.01}
        metrics.update({"val/iou/cat": value + 0.1, "val/iou/dog": value - 0.1})
        summary = {"metrics": metrics, "num_params": 1234, "train_time_s": 60.0 + run.seed}
        (run.workdir / "summary.json").write_text(json.dumps(summary))
        history = [{"step": 5, "val/miou": value / 2}, {"step": 10, "val/miou": value}]
        (run.workdir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in history))
        (run.workdir / "predictions_val.png").write_bytes(b"\x89PNG fake")
    return tmp_path, runs


def test_the_table_has_our_mean_and_std_beside_the_reference(sweep_dir):
    directory, runs = sweep_dir
    built = report.build(SWEEP, "configs/heads.py", runs, directory)
    table = report.table_markdown(built).splitlines()
    assert table[0] == (
        "| row | presets and overrides | params | wall time | seeds | val/miou | val/miou (seed) "
        "| test/miou |"
    )
    assert (
        table[2]
        == "| big head | `big` | 1,234 | 1 min 00 s | 2 | 0.610 ± 0.014 | 0.620 | 0.600 ± 0.014 |"
    )
    assert table[4] == (
        "| tiny | `tiny, model.width=4` | 1,234 | 1 min 00 s | 2 | 0.330 ± 0.042 |  "
        "| 0.320 ± 0.042 |"
    )


def test_the_verdicts_follow_the_spread(sweep_dir):
    directory, runs = sweep_dir
    built = report.build(SWEEP, "configs/heads.py", runs, directory)
    order, reversed_claim = built.verdicts
    # big - small = 0.10 > 0.028; small - tiny = 0.18 > 0.014 + 0.042.
    assert order.status == stats.REPRODUCED
    assert reversed_claim.status == stats.NOT_REPRODUCED
    rows = built.to_json()["rows"]
    assert rows["small"]["val/miou"]["mean"] == pytest.approx(0.51)
    assert rows["small"]["val/miou"]["std"] == pytest.approx(0.0141421, rel=1e-4)
    assert rows["big"]["reference"] == {"val/miou": 0.62}


def test_the_report_files_are_written_from_the_workdirs_alone(sweep_dir):
    directory, runs = sweep_dir
    built = report.build(SWEEP, "configs/heads.py", runs, directory, "python main.py x")
    path = report.write(built, runs, directory)
    text = path.read_text()
    assert text.startswith("# E9: three heads")
    assert "`python main.py x`" in text
    assert "- **reproduced**: big > small > tiny (`val/miou`)" in text
    assert "- **not reproduced**: small beats big on test (`test/miou`)" in text
    for figure in ("curves.png", "bars_val_iou.png", "big_predictions_val.png"):
        assert f"(report/{figure})" in text
        assert (directory / "report" / figure).stat().st_size > 0
    assert "--config=configs/heads.py:tiny" in text
    saved = json.loads((directory / "report.json").read_text())
    assert [f["status"] for f in saved["findings"]] == [stats.REPRODUCED, stats.NOT_REPRODUCED]


def test_rows_without_finished_runs_are_reported_as_not_run(sweep_dir):
    directory, runs = sweep_dir
    for run in runs:
        if run.row.name == "tiny":
            (run.workdir / "summary.json").unlink()
    built = report.build(SWEEP, "configs/heads.py", runs, directory)
    assert built.verdicts[0].status == stats.MISSING
    assert "| tiny | `tiny, model.width=4` |  |  | 0 | not run |  | not run |" in (
        report.table_markdown(built)
    )
