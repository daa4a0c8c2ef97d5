"""Multi-process runs (dllab_jax/distributed.py, parallel.py): 2 local processes x 2 simulated
CPU devices (gloo collectives over 127.0.0.1) against 1 process x 4 devices.

The end-to-end tests start `main.py` processes; each one stops by itself (a bounded timeout
on every wait) and talks to the others over the loopback interface only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from dllab_jax import distributed, parallel
from dllab_jax.data import ArraySource, SourceInfo, augment, pipeline
from dllab_jax.data.tokenizer import pick_one_caption
from dllab_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SMOKE = "configs/classification.py:smoke"
TIMEOUT_S = 240  # any one process of these tests; they take 20-60 s on 2 cores


# ----------------------------------------------------------- rows of a global batch
def _source(n=24):
    info = SourceInfo(num_classes=3, class_names=("a", "b", "c"), image_shape=(6, 6, 3))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 6, 6, 3), dtype=np.uint8)
    return ArraySource({"image": images, "label": np.arange(n, dtype=np.int32) % 3}, info)


def _row_batches(source, augment_fn, rows, steps=3):
    batches = pipeline.train_batches(source, 8, seed=3, augment=augment_fn, rows=rows)
    return [next(batches) for _ in range(steps)]


@pytest.mark.parametrize(
    "aug",
    [
        dict(random_crop_padding=2, hflip=True),
        dict(random_resized_crop=True, hflip=True),
    ],
)
def test_each_process_rows_are_exactly_its_part_of_the_whole_batch(aug):
    source = _source()
    augment_fn = augment.make_augment(ml_collections.ConfigDict(aug))
    assert augment_fn.takes_rows
    whole = _row_batches(source, augment_fn, None)
    parts = [_row_batches(source, augment_fn, slice(a, a + 2)) for a in (0, 2, 4, 6)]
    for step, batch in enumerate(whole):
        for key in ("image", "label"):
            joined = np.concatenate([part[step][key] for part in parts])
            np.testing.assert_array_equal(joined, batch[key])
    assert parts[0][0]["image"].shape[0] == 2  # each process read two rows, not eight


def test_an_augmentation_without_rows_gets_the_whole_batch_then_is_cut():
    def shift(batch, rng):  # one draw for the whole batch: no rows support
        return dict(
            batch,
            image=batch["image"]
            + rng.integers(0, 5, size=len(batch["image"]))[:, None, None, None].astype(np.uint8),
        )

    source = _source()
    whole = _row_batches(source, shift, None)
    half = _row_batches(source, shift, slice(4, 8))
    for w, h in zip(whole, half, strict=True):
        np.testing.assert_array_equal(w["image"][4:8], h["image"])


def test_pick_one_caption_draws_for_the_whole_batch():
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(0, 100, size=(6, 3, 4)),
        "attention_mask": np.ones((6, 3, 4), np.int32),
        "caption_mask": np.asarray([[1, 1, 1]] * 3 + [[1, 0, 0]] * 3, np.float32),
    }
    whole = pick_one_caption(batch, np.random.default_rng(7))
    part = pick_one_caption(
        {k: v[2:5] for k, v in batch.items()},
        np.random.default_rng(7),
        rows=augment.BatchRows(2, 5, 6),
    )
    np.testing.assert_array_equal(whole["input_ids"][2:5], part["input_ids"])


def test_one_process_holds_every_row():
    mesh = parallel.make_mesh()
    assert parallel.process_rows(mesh, 16) == slice(0, 16)
    assert not parallel.is_multi_process(mesh)


# ---------------------------------------------------------------- initialisation
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(coordinator_address="127.0.0.1:1234"), "go together"),
        (dict(coordinator_address="localhost", num_processes=2, process_id=0), "host:port"),
        (dict(coordinator_address="127.0.0.1:1", num_processes=2, process_id=2), "0 .. 1"),
    ],
)
def test_incomplete_or_wrong_flags_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        distributed.initialize(**kwargs)


def test_launchers_are_detected_from_their_environment(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("SLURM_", "OMPI_")):
            monkeypatch.delenv(key)
    assert distributed.detected_launcher() is None
    slurm = dict(
        SLURM_JOB_ID="7",
        SLURM_STEP_NODELIST="n[1-2]",
        SLURM_NTASKS="1",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
    )
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert distributed.detected_launcher() is None  # one task: nothing to join
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.detected_launcher() == "slurm"


# ------------------------------------------------------------- end to end
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    # tests/conftest.py simulates 4 devices for this process; each child sets its own count.
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "device_count" not in f)
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
    return env


def _command(workdir, *extra):
    return [sys.executable, "main.py", f"--config={SMOKE}", f"--workdir={workdir}", *extra]


def _run_processes(workdir, num_processes, *extra, devices_each=None):
    """Runs the smoke config on `num_processes` local processes; returns their outputs."""
    devices_each = devices_each or 4 // num_processes
    if num_processes == 1:
        commands = [_command(workdir, *extra)]
    else:
        address = f"127.0.0.1:{_free_port()}"
        commands = [
            _command(
                workdir,
                *extra,
                f"--coordinator_address={address}",
                f"--num_processes={num_processes}",
                f"--process_id={index}",
            )
            for index in range(num_processes)
        ]
    procs = [
        subprocess.Popen(
            c, cwd=REPO, env=_env(devices_each), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for c in commands
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT_S)
            outputs.append((proc.returncode, out.decode(), err.decode()))
    finally:
        for proc in procs:
            proc.kill()
    for code, _out, err in outputs:
        assert code == 0, err[-3000:]
    return outputs


def _records(workdir) -> list[dict]:
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def _assert_same_numbers(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        for key in x:
            if key.endswith(("loss", "accuracy")):
                # Float32 round-off: the all-reduce sums the same numbers in another order.
                np.testing.assert_allclose(x[key], y[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_and_resume_across_layouts(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    outputs = _run_processes(two, 2)
    _run_processes(one, 1)
    _assert_same_numbers(_records(two), _records(one))
    first_loss = next(r["train/loss"] for r in _records(two) if "train/loss" in r)
    assert first_loss == pytest.approx(
        next(r["train/loss"] for r in _records(one) if "train/loss" in r), rel=1e-6
    )
    # Process 0 alone wrote the logs and summaries; process 1 printed no metrics.
    assert len(list(two.glob("events.out.tfevents.*"))) == 1
    assert (two / "summary.json").is_file()
    assert "test/accuracy" in outputs[0][1] and "test/accuracy" not in outputs[1][1]
    summary_two = json.loads((two / "summary.json").read_text())
    summary_one = json.loads((one / "summary.json").read_text())
    assert summary_two["num_params"] == summary_one["num_params"] == 72954
    np.testing.assert_allclose(
        summary_two["metrics"]["test/loss"], summary_one["metrics"]["test/loss"], rtol=1e-4
    )

    # 2 processes x 2 devices -> 1 x 4, and 1 x 4 -> 2 x 2: both resume at step 6.
    more = "--config.num_train_steps=8"
    resumed_on_one = _run_processes(two, 1, more)
    resumed_on_two = _run_processes(one, 2, more)
    assert "resuming from the checkpoint at step 6" in resumed_on_one[0][1]
    assert "resuming from the checkpoint at step 6" in resumed_on_two[0][1]
    _assert_same_numbers(_records(two), _records(one))
    assert _records(two)[-1]["step"] == 8


@pytest.mark.slow
def test_a_killed_process_stops_the_other_with_one_line(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    workdir = tmp_path / "run"
    procs = [
        subprocess.Popen(
            _command(
                workdir,
                "--config.num_train_steps=100000",
                "--config.log_every_steps=1",
                f"--coordinator_address={address}",
                "--num_processes=2",
                f"--process_id={index}",
            ),
            cwd=REPO,
            env=_env(2),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for index in range(2)
    ]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        history = workdir / "metrics.jsonl"
        while not (history.is_file() and history.read_text().count("train/loss") >= 2):
            assert time.monotonic() < deadline, "training did not start"
            assert all(p.poll() is None for p in procs), procs[0].stderr.read().decode()[-2000:]
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        start = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        waited = time.monotonic() - start
    finally:
        for proc in procs:
            proc.kill()
    assert procs[0].returncode == distributed.EXIT_PEER_LOST
    assert waited < 30
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("error: process 0 of 2: lost process 1 (it exited or was killed)")
    assert "Traceback" not in err.decode()
