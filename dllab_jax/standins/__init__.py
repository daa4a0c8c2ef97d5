"""Pre-trained stand-in checkpoints shipped with the package, for the offline defaults whose
handout starts from published weights (E4's DINO backbone).

Each stand-in is a folder `dllab_jax/standins/<name>/` in the format a run of this project
writes (`best/<step>/` with the `params`, `model_state` and `meta` items; the optimiser
state, which nothing loads, is left out), so `config.init_from.workdir = standins.path(name)`
with the default `dllab` format reads it like any other run. Beside it, `record.json` and
`RECORD.md` say how it was made: the command, seed, data seed, config, wall time, step and
metrics of the run it comes from, and the commit. `tests/test_standins.py` loads every
stand-in and checks that it scores what its record says.

Made by training a run as usual, then

    python -m dllab_jax.standins export --workdir=<the run> --name=<name> \\
        --command="<the command that trained it>"
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from dllab_jax.errors import UserError

STANDINS_DIR = Path(__file__).resolve().parent
RECORD_FILE = "record.json"
# Checkpoint items a stand-in ships: what `init_from` reads, and the run's meta.
SHIPPED_ITEMS = ("params", "model_state", "meta", "_CHECKPOINT_METADATA", "commit_success.txt")


def path(name: str) -> str:
    """The folder of stand-in `name` (a run-format workdir for `config.init_from.workdir`)."""
    return str(STANDINS_DIR / name)


def record(name: str) -> dict:
    """The record of stand-in `name` (see the module docstring)."""
    file = STANDINS_DIR / name / RECORD_FILE
    if not file.is_file():
        raise UserError(f"no stand-in {name!r} in {STANDINS_DIR}; known: {names()}")
    return json.loads(file.read_text())


def names() -> list[str]:
    return sorted(p.parent.name for p in STANDINS_DIR.glob(f"*/{RECORD_FILE}"))


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=STANDINS_DIR,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def export(workdir: str | Path, name: str, command: str) -> Path:
    """Copies the best checkpoint of the finished run in `workdir` into stand-in `name`,
    without the optimiser state, and writes its record; returns the stand-in's folder.

    Raises:
      UserError: the run has no summary.json (not finished) or no best checkpoint.
    """
    workdir = Path(workdir)
    spec = re.search(r"--config=(\S+)", command)
    if spec is None:
        raise UserError(
            f"--command must be the main.py command with its --config=, got {command!r}"
        )
    summary_file, config_file = workdir / "summary.json", workdir / "config.json"
    if not summary_file.is_file():
        raise UserError(f"{workdir} has no summary.json: let the run finish first")
    summary = json.loads(summary_file.read_text())
    config = json.loads(config_file.read_text())
    best = workdir / "best"
    steps = sorted(int(p.name) for p in best.glob("*") if p.name.isdigit()) if best.is_dir() else []
    if not steps:
        raise UserError(f"{workdir} has no best checkpoint (config.checkpoint.best_metric)")
    step = steps[-1]
    target = STANDINS_DIR / name
    staging = STANDINS_DIR / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "best").mkdir(parents=True)
    source = best / str(step)
    shutil.copytree(
        source,
        staging / "best" / str(step),
        ignore=lambda folder, entries: [
            e for e in entries if Path(folder) == source and e not in SHIPPED_ITEMS
        ],
    )
    metrics = summary["metrics"]
    best_metric = config["checkpoint"]["best_metric"]
    rec = {
        "name": name,
        "command": command,
        "config_spec": spec.group(1),
        "seed": config["seed"],
        "data_seed": config["data_seed"],
        "made_on": time.strftime("%Y-%m-%d"),
        "commit": _commit(),
        "train_time_s": summary.get("train_time_s"),
        "steps": summary.get("step"),
        "best_step": step,
        "num_params": summary.get("num_params"),
        "best_metric": best_metric,
        "best_value": metrics.get(f"best/{best_metric}", metrics.get(best_metric)),
        "metrics": metrics,
        "config": config,
    }
    (staging / RECORD_FILE).write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    (staging / "RECORD.md").write_text(_record_markdown(rec))
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    return target


def _record_markdown(rec: dict) -> str:
    minutes, seconds = divmod(round(rec["train_time_s"] or 0), 60)
    return (
        f"# Stand-in `{rec['name']}`\n\n"
        f"Made on {rec['made_on']} at commit {rec['commit']} by\n\n```\n{rec['command']}\n```\n\n"
        f"seed {rec['seed']}, data seed {rec['data_seed']}; {rec['steps']} steps in "
        f"{minutes} min {seconds:02d} s of training on the 2-core development machine; "
        f"{rec['num_params']:,} parameters; best `{rec['best_metric']}` = "
        f"{rec['best_value']:.4f} at step {rec['best_step']} (the checkpoint shipped here, "
        "without its optimiser state). The full config and metrics are in record.json.\n"
    )


def main(argv=None) -> None:
    import argparse

    from dllab_jax.errors import one_line_errors

    parser = argparse.ArgumentParser(prog="python -m dllab_jax.standins")
    sub = parser.add_subparsers(dest="verb", required=True)
    exp = sub.add_parser("export", help="ship a finished run's best checkpoint as a stand-in")
    exp.add_argument("--workdir", required=True)
    exp.add_argument("--name", required=True)
    exp.add_argument("--command", required=True, help="the command that trained the run")
    sub.add_parser("list", help="the shipped stand-ins and their records")
    args = parser.parse_args(argv)
    with one_line_errors():
        if args.verb == "export":
            print(f"exported {export(args.workdir, args.name, args.command)}")
        else:
            for name in names():
                r = record(name)
                print(f"{name}: {r['best_metric']} {r['best_value']:.4f} ({r['command']})")
