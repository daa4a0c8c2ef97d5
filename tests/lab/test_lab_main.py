"""`python -m dllab_jax.lab` and the sweeps the configs declare."""

import subprocess
import sys

import pytest

from dllab_jax.config_utils import REPO_ROOT, load_config
from dllab_jax.lab import runner, spec


def _lab(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "dllab_jax.lab", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_every_experiment_declares_a_sweep_whose_rows_load():
    configs = spec.sweep_configs()
    sweeps = {path: spec.load_sweep(path) for path in configs}
    assert sorted({s.experiment for s in sweeps.values()}) == [f"E{i}" for i in range(1, 8)]
    for path, sweep in sweeps.items():
        for row in sweep.rows:
            load_config(runner.row_spec(path, "smoke", row))  # as `python -m dllab_jax.lab --smoke`
            config = load_config(runner.row_spec(path, "", row))  # a bad preset raises
            for key in row.overrides:
                node = config
                for part in key.split("."):
                    node = node[part]
            assert set(row.reference) <= set(sweep.metrics), (path, row.name)
        for finding in sweep.findings:
            assert finding.metric in sweep.metrics, (path, finding.claim)


def test_print_commands_lists_every_run_of_the_chosen_experiments(tmp_path):
    out = _lab("--print_commands", "--only=E4,E2", "--seeds=2", "--dir=lab", cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    # E2: colourisation (2 rows) and segmentation (3 rows); E4: 4 heads; 2 seeds each.
    assert len(lines) == 18
    assert lines[0].startswith("python main.py --config=configs/colorization.py:skips ")
    assert "--workdir=lab/seg_heads/shared_qk/seed1" in lines[-1]


def test_report_only_writes_the_lab_report_without_training(tmp_path):
    out = _lab("--report_only", "--only=E5", f"--dir={tmp_path}", cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "REPORT.md").read_text()
    assert "## E5: Diffusion with composable conditioning" in text
    assert "- **not measured**: The model composes codes it never saw" in text
    assert (tmp_path / "diffusion" / "REPORT.md").is_file()
    assert not (tmp_path / "diffusion" / "default").exists()


@pytest.mark.parametrize("args", [["--only=E9"], ["--seeds=0"]])
def test_bad_lab_arguments_are_one_line_and_status_2(tmp_path, args):
    out = _lab(*args, f"--dir={tmp_path}", cwd=REPO_ROOT)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
