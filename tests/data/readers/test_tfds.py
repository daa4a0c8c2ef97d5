"""tfds data sets (dllab_jax/data/readers/tfds.py) without TensorFlow name the extra."""

import sys

import pytest

from dllab_jax.errors import UserError


def test_tfds_sources_without_tensorflow_name_the_extra(monkeypatch):
    from dllab_jax.data.readers import tfds as tfds_sources

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(UserError, match=r"pip install -e '\.\[tfds\]'"):
        tfds_sources._import_tfds()
