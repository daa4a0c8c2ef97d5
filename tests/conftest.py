"""Test set-up: 4 simulated CPU devices, so data parallelism is exercised by every run, cheaper
compiles, and a persistent compilation cache shared by the whole session.

XLA reads the flag when jax initialises its backend, so it must be set before any test
imports jax. Tests that need one device build a mesh from `jax.devices()[:1]`.

Most tests train a tiny model for a few steps, so compiling dominates their time; many runs
compile the same programs (the same config, resumed). JAX's persistent cache serves those from
disk (a run of the resilience tests' config: 13 s the first time, 4 s after), and the
procedural data sets are generated once per session (dllab_jax/data/cache.py). Both caches
live in fresh temporary folders per session, so no state leaks between sessions, and
subprocesses (the CLI tests) inherit them through the environment.
"""

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np  # neither imports jax, which must see the flags below first
import pytest

# LLVM optimisation level 1 instead of 2: tests run a few steps of each program, so compiling
# is most of their time (tests/tasks/test_segmentation.py: 5 min 50 s -> 5 min 13 s); a
# model's initialisation is bit-identical at level 1 (dllab_jax/performance.py).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=4 --xla_backend_optimization_level=1"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="dllab_jax_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Procedural splits are cached on disk (dllab_jax/data/cache.py): per session here too.
os.environ.setdefault("DLLAB_DATA_CACHE", tempfile.mkdtemp(prefix="dllab_jax_data_"))

# ----------------------------------------------------------------- shared fixtures
# Fixtures, not importable helpers: several folders have a conftest.py, so `import conftest`
# would find whichever pytest loaded last.

# The generic loop's test config: a CNN on 64 procedural shapes, 6 steps.
SMOKE = "configs/classification.py:smoke"
# Evaluations (and so new bests) at 3, 6, 9; train logs at 4, 8, 10; regular saves at 4, 8, 10:
# the windows where a kill used to break a run all occur in 10 steps.
RESILIENT = {
    "num_train_steps": 10,
    "eval_every_steps": 3,
    "log_every_steps": 4,
    "checkpoint.every_steps": 4,
}


def override_config(spec: str, **dotted_overrides):
    """`load_config(spec)` with keys such as "optimizer.learning_rate" set to new values."""
    from dllab_jax.config_utils import load_config

    config = load_config(spec)
    for key, value in dotted_overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


@pytest.fixture(scope="session")
def override():
    """`override(spec, **{"a.b": value})`: the config of `spec` with dotted keys overridden."""
    return override_config


@pytest.fixture(scope="session")
def smoke_config():
    """`smoke_config(**dotted_overrides)`: the SMOKE config, overridden."""
    return functools.partial(override_config, SMOKE)


@pytest.fixture(scope="session")
def resilient_config():
    """`resilient_config(**dotted_overrides)`: SMOKE over 10 steps (RESILIENT), overridden."""
    return lambda **overrides: override_config(SMOKE, **RESILIENT, **overrides)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, smoke_config):
    """(workdir, summary) of one uninterrupted smoke run, for the tests that only read it."""
    from dllab_jax import train

    workdir = tmp_path_factory.mktemp("run")
    return workdir, train.train_and_evaluate(smoke_config(), workdir)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, resilient_config):
    """(workdir, summary) of the uninterrupted run every interrupted one must reproduce."""
    from dllab_jax import train

    workdir = tmp_path_factory.mktemp("reference")
    return workdir, train.train_and_evaluate(resilient_config(), workdir)


class RunFiles:
    """Reading what a run wrote in its workdir."""

    @staticmethod
    def history(workdir: Path) -> list[dict]:
        """The records of metrics.jsonl."""
        return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]

    @staticmethod
    def steps(workdir: Path, sub: str) -> list[int]:
        """The steps saved under `workdir/sub` (checkpoints, best)."""
        return sorted(int(p.name) for p in (workdir / sub).iterdir() if p.name.isdigit())

    @staticmethod
    def snapshot(directory: Path) -> dict[str, str]:
        """{relative path: sha256} of every file under `directory` but the lock (which names
        its latest holder)."""
        from dllab_jax import run_dir

        out = {}
        for root, _, files in os.walk(directory):
            for name in files:
                if name == run_dir.LOCK_FILE:
                    continue
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
        return out

    @staticmethod
    def assert_same_run(workdir: Path, summary: dict, reference: tuple) -> None:
        """The run in `workdir` ended as the `reference` fixture's, bit for bit."""
        ref_dir, ref_summary = reference
        assert summary["step"] == ref_summary["step"]
        assert summary["best_step"] == ref_summary["best_step"]
        assert summary["metrics"] == ref_summary["metrics"]  # bit-identical
        assert RunFiles.history(workdir) == RunFiles.history(ref_dir)  # record for record


@pytest.fixture(scope="session")
def run_files():
    return RunFiles


@pytest.fixture
def birds_folder(tmp_path):
    """A tiny ImageFolder at tmp_path/birds: train/valid/test of CROW and DOVE, 8/2/2 PNGs
    of 20x24 random pixels per class."""
    from PIL import Image

    root = tmp_path / "birds"
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 8), ("valid", 2), ("test", 2)):
        for species in ("CROW", "DOVE"):
            folder = root / split / species
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png"
                )
    return root
