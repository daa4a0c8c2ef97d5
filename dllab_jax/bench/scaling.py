"""Data-parallel scaling over local processes: the same `--mode=benchmark` train step on
1, 2, ... processes of this machine (JAX's distributed runtime, gloo collectives on CPU).

    python -m dllab_jax.bench.scaling --config=configs/classification.py \\
        --processes=1,2 --devices_per_process=1 --out=benchmarks/results/scaling-cpu

Each row starts that many `main.py --mode=benchmark` processes (coordinator on 127.0.0.1),
with the global batch fixed at `config.batch_size` (strong scaling: what a run with more
processes does). It writes `<out>/scaling.json` and `<out>/scaling.md`: median step time,
examples/s and the speed-up over the first row. On a cluster, time the rows there instead:
`srun ... python main.py --config=... --mode=benchmark` prints the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from dllab_jax import config_utils

TIMEOUT_S = 1800


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_row(
    config: str, processes: int, devices_per_process: int, workdir: Path, extra: list[str]
) -> dict:
    """Runs one `--mode=benchmark` on `processes` local processes; returns benchmark.json."""
    command = [
        sys.executable,
        str(config_utils.REPO_ROOT / "main.py"),
        f"--config={config}",
        "--mode=benchmark",
        f"--workdir={workdir}",
        *extra,
    ]
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices_per_process))
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "device_count" not in f)
    procs = []
    for index in range(processes):
        multi = (
            [
                f"--coordinator_address={address}",
                f"--num_processes={processes}",
                f"--process_id={index}",
            ]
            if processes > 1
            else []
        )
        procs.append(subprocess.Popen([*command, *multi], env=env, cwd=config_utils.REPO_ROOT))
    try:
        codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            p.kill()
    if any(codes):
        raise SystemExit(f"error: the {processes}-process benchmark failed (exit codes {codes})")
    return json.loads((workdir / "benchmark.json").read_text())


def scaling_table(rows: list[dict]) -> str:
    """Markdown: one line per row, speed-up against the first."""
    base = rows[0]["examples_per_s"]
    lines = [
        "| processes | devices | global batch | step (ms) | examples/s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_processes']} | {r['num_devices']} | {r['global_batch_size']} | "
            f"{r['step_s_median'] * 1e3:.1f} | {r['examples_per_s']:.1f} | "
            f"{r['examples_per_s'] / base:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="configs/<x>.py[:preset]")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/scaling")
    args, extra = parser.parse_known_args(argv)
    counts = [int(c) for c in args.processes.split(",")]
    if any(c < 1 for c in counts):
        parser.error("--processes must be positive integers")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for count in counts:
        workdir = out / f"p{count}"
        if workdir.exists():
            import shutil

            shutil.rmtree(workdir)
        rows.append(run_row(args.config, count, args.devices_per_process, workdir, extra))
    record = {
        "config": args.config,
        "devices_per_process": args.devices_per_process,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python -m dllab_jax.bench.scaling", *(argv or sys.argv[1:])]),
        "rows": rows,
    }
    (out / "scaling.json").write_text(json.dumps(record, indent=2) + "\n")
    table = scaling_table(rows)
    (out / "scaling.md").write_text(f"{record['command']} ({record['date']})\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
