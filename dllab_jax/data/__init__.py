"""Data: one registry of sources, one pipeline that batches them.

A *source* is a random-access data set of examples for one split (see `base.Source`); the
registry maps `config.data.name` to a function `make(data_config, split) -> Source`. The
pipeline (`pipeline.py`) turns sources into batches of numpy arrays for training (shuffled,
augmented, resumable from any step) and evaluation (padded to full batches with a
`batch_mask`).
"""

from dllab_jax.data.base import ArraySource, Source, SourceInfo
from dllab_jax.data.registry import get_source, register, registered_sources

__all__ = [
    "ArraySource",
    "Source",
    "SourceInfo",
    "get_source",
    "register",
    "registered_sources",
]
