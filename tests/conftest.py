"""Test set-up: 4 simulated CPU devices, so data parallelism is exercised by every run.

XLA reads the flag when jax initialises its backend, so it must be set before any test
imports jax. Tests that need one device build a mesh from `jax.devices()[:1]`.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
