"""Sources found by name (dllab_jax/data/__init__.py over `registry.data_sources`)."""

from __future__ import annotations

import subprocess
import sys

import ml_collections
import pytest

from dllab_jax import data
from dllab_jax.errors import UserError


def test_unknown_source_lists_the_registered_ones():
    names = data.registered_sources()
    assert {"shapes", "scenes", "captioned_shapes", "concepts", "synthetic"} <= set(names)
    with pytest.raises(
        UserError, match=r"unknown data source 'shape'; set config.data.name to one of \[.*'shapes'"
    ):
        data.get_source(ml_collections.ConfigDict(dict(name="shape")), "train")


def test_finding_every_source_imports_no_heavy_framework():
    """`registry.data_sources.names()` imports every module of dllab_jax.data.sources."""
    code = (
        "import sys; from dllab_jax import data; data.registered_sources(); "
        "print(sorted(m for m in ('tensorflow', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
