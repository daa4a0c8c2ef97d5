"""Chaos check of the training loop: kill a run at random moments, resume it, compare.

    python scripts/chaos.py [--kills=20] [--terms=5] [--seed=0] [--root=DIR]

Runs a small config once without interruption (the reference), then runs it again in another
workdir and, over and over, starts `main.py` there and stops it: with SIGKILL at `--kills`
random moments (about half of them the moment a checkpoint write is seen under way, the rest
at a random time during training, a few during start-up) and with SIGTERM at `--terms` (each
must exit 143 with its one line, having saved the step it names). After the last stop the run
is finished with the same command. It then compares the final `summary.json` metrics and
`metrics.jsonl` with the reference, record for record, and prints

    20/20 resumed, 0 corrupt, metrics equal

or what differed. A restart that crashes (any exit other than the stop we sent, or a clean
finish) counts as corrupt. Everything is written under --root (default a new temporary
folder), with `chaos.json` listing every stop: when, how, what the run was doing, and how the
next start went. This is a check to run by hand (minutes), not a unit test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = f"{REPO}/configs/classification.py:smoke"
# 1000 steps (more than the stops consume); evaluations (and so best saves) every 3, train
# logs every 4, regular saves every 20: every window where a kill used to break a run (between
# a best and a regular save, mid train-window, mid save) comes round many times.
OVERRIDES = (
    "--config.num_train_steps=1000",
    "--config.eval_every_steps=3",
    "--config.log_every_steps=4",
    "--config.checkpoint.every_steps=20",
)


def command(workdir: Path) -> list[str]:
    return [sys.executable, str(REPO / "main.py"), f"--config={CONFIG}", f"--workdir={workdir}"]


def history(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def saving(workdir: Path) -> bool:
    """True while orbax is writing a checkpoint (its temporary directory exists)."""
    for sub in ("checkpoints", "best"):
        try:
            if any("tmp" in e.name for e in os.scandir(workdir / sub)):
                return True
        except FileNotFoundError:
            pass
    return False


def last_step(workdir: Path) -> int:
    records = history(workdir)
    return records[-1]["step"] if records else 0


def start(workdir: Path, log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        out.write(f"\n===== start {time.strftime('%H:%M:%S')}\n")
        out.flush()
        return subprocess.Popen(
            [*command(workdir), *OVERRIDES], stdout=out, stderr=subprocess.STDOUT, text=True
        )


def wait_for_progress(proc: subprocess.Popen, workdir: Path, timeout: float = 300) -> bool:
    """Waits until the run logs a step beyond where it was; False if it ended first."""
    begin, deadline = last_step(workdir), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if last_step(workdir) > begin:
            return True
        time.sleep(0.01)
    return False


def stop_once(proc, workdir: Path, how: str, rng: random.Random) -> dict:
    """Stops `proc` as `how` says; returns what happened."""
    event = {"how": how, "t": time.strftime("%H:%M:%S")}
    started_at = last_step(workdir)
    if how == "kill_startup":
        time.sleep(rng.uniform(0.5, 4.0))
    elif how in ("kill_random", "term"):
        wait_for_progress(proc, workdir)
        time.sleep(rng.uniform(0.0, 1.0))
    elif how == "kill_save":
        wait_for_progress(proc, workdir)
        deadline = time.monotonic() + 60
        while not saving(workdir) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
    if proc.poll() is not None:
        event.update(outcome="ended before the stop", returncode=proc.returncode)
        return event
    event["step_logged"] = last_step(workdir)
    event["phase"] = "training" if event["step_logged"] > started_at else "start-up"
    # In start-up, a temporary folder is the one a kill left before; this start removes it.
    event["during_save"] = event["phase"] == "training" and saving(workdir)
    proc.send_signal(signal.SIGKILL if how.startswith("kill") else signal.SIGTERM)
    proc.wait()
    event["returncode"] = proc.returncode
    return event


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--terms", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default="")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(args.root or tempfile.mkdtemp(prefix="dllab_chaos_"))
    root.mkdir(parents=True, exist_ok=True)
    # Restarts compile the same programs: serve them from a cache, as a user's reruns can.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / "jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    print(f"chaos: working in {root}")

    t0 = time.monotonic()
    reference = root / "reference"
    ref = subprocess.run(
        [*command(reference), *OVERRIDES], capture_output=True, text=True, check=False
    )
    if ref.returncode != 0:
        print(ref.stderr[-3000:])
        print("chaos: the reference run failed")
        return 1
    print(f"chaos: reference run done in {time.monotonic() - t0:.0f} s")

    hows = ["kill_save"] * (args.kills // 2) + ["term"] * args.terms
    hows += ["kill_startup"] * min(3, args.kills - args.kills // 2)
    hows += ["kill_random"] * (args.kills - hows.count("kill_save") - hows.count("kill_startup"))
    rng.shuffle(hows)
    workdir, log = root / "chaos", root / "chaos.log"
    events, corrupt, resumed = [], [], 0
    unchecked: list[dict] = []  # stops whose resume is checked once a start logs a step
    proc = start(workdir, log)
    for i, how in enumerate(hows):
        event = stop_once(proc, workdir, how, rng)
        if "outcome" in event:  # it finished or crashed on its own
            if event["returncode"] != 0:
                corrupt.append(f"stop {i} ({how}): exited {event['returncode']} by itself")
            events.append(event)
            print(f"chaos: {i + 1}/{len(hows)} {how}: {event['outcome']}; starting over")
            break
        if how == "term":
            tail = log.read_text().strip().splitlines()[-1]
            event["last_line"] = tail
            expected = event["returncode"] == 143 and tail.startswith("interrupted at step ")
            expected = expected and "checkpoint saved" in tail
            if not expected:
                corrupt.append(f"stop {i} (SIGTERM): exit {event['returncode']}, said {tail!r}")
        elif event["returncode"] != -signal.SIGKILL:
            corrupt.append(f"stop {i} ({how}): exit {event['returncode']}")
        events.append(event)
        print(
            f"chaos: {i + 1}/{len(hows)} {how} in {event['phase']} at logged step "
            f"{event['step_logged']}{' during a save' if event['during_save'] else ''} -> exit "
            f"{event['returncode']}"
        )
        proc = start(workdir, log)
        unchecked.append(event)
        if i + 1 < len(hows) and hows[i + 1] == "kill_startup":
            continue  # the next stop comes before this start logs anything: checked after it
        # A resume that works gets past its start and logs a new step (or finishes cleanly).
        if wait_for_progress(proc, workdir) or proc.poll() == 0:
            resumed += len(unchecked)
            for stop in unchecked:
                stop["next_start"] = "resumed"
        else:
            event["next_start"] = f"failed (exit {proc.poll()})"
            corrupt.append(f"start after stop {i} ({how}) failed: exit {proc.poll()}")
            proc.kill()
            proc = start(workdir, log)
        unchecked = []
    proc.wait()
    if proc.returncode != 0:
        corrupt.append(f"the final run exited {proc.returncode}")

    differences = []
    ref_summary = json.loads((reference / "summary.json").read_text())
    try:
        summary = json.loads((workdir / "summary.json").read_text())
    except FileNotFoundError:
        summary = {}
        differences.append("no summary.json")
    for key in ("step", "best_step", "metrics"):
        if summary.get(key) != ref_summary.get(key):
            differences.append(f"summary {key}: {summary.get(key)} != {ref_summary.get(key)}")
    ours, theirs = history(workdir), history(reference)
    if ours != theirs:
        first = next(
            (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
            min(len(ours), len(theirs)),
        )
        differences.append(
            f"metrics.jsonl: {len(ours)} vs {len(theirs)} records, first difference at record "
            f"{first}"
        )
    stops = len(events)
    kills = sum(e["how"].startswith("kill") for e in events)
    terms = stops - kills
    verdict = f"{resumed}/{stops} resumed, {len(corrupt)} corrupt, " + (
        "metrics equal" if not differences else "metrics differ: " + "; ".join(differences)
    )
    report = {
        "verdict": verdict,
        "kills": kills,
        "terms": terms,
        "kills_during_saves": sum(
            bool(e.get("during_save")) for e in events if e["how"].startswith("kill")
        ),
        "kills_during_start_up": sum(
            e.get("phase") == "start-up" for e in events if e["how"].startswith("kill")
        ),
        "corrupt": corrupt,
        "differences": differences,
        "events": events,
        "wall_s": round(time.monotonic() - t0, 1),
        "root": str(root),
    }
    (root / "chaos.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"chaos: {kills} SIGKILL ({report['kills_during_saves']} during checkpoint writes, "
        f"{report['kills_during_start_up']} during start-up), "
        f"{terms} SIGTERM, {report['wall_s']:.0f} s; details in {root / 'chaos.json'}"
    )
    for line in corrupt:
        print(f"chaos: corrupt: {line}")
    print(verdict)
    return 0 if not corrupt and not differences and resumed == stops else 1


if __name__ == "__main__":
    sys.exit(main())
