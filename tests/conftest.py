"""Test set-up: 4 simulated CPU devices, so data parallelism is exercised by every run, and a
persistent compilation cache shared by the whole session.

XLA reads the flag when jax initialises its backend, so it must be set before any test
imports jax. Tests that need one device build a mesh from `jax.devices()[:1]`.

Most tests train a tiny model for a few steps, so compiling dominates their time; many runs
compile the same programs (the same config, resumed). JAX's persistent cache serves those from
disk (a run of the resilience tests' config: 13 s the first time, 4 s after), and the
procedural data sets are generated once per session (dllab_jax/data/cache.py). Both caches
live in fresh temporary folders per session, so no state leaks between sessions, and
subprocesses (the CLI tests) inherit them through the environment.
"""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="dllab_jax_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Procedural splits are cached on disk (dllab_jax/data/cache.py): per session here too.
os.environ.setdefault("DLLAB_DATA_CACHE", tempfile.mkdtemp(prefix="dllab_jax_data_"))
