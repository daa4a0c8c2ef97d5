"""Data: sources found by name, one pipeline that batches them.

A *source* is a random-access data set of examples for one split (see `base.Source`).
`config.data.name` names it: `dllab_jax/data/sources/<name>.py` (or another module of that
package) registers `make(data_config, split) -> Source` with
`@registry.data_sources.register("<name>")`, and `get_source` finds it there; nothing else
lists the sources. The pipeline (`pipeline.py`) turns sources into batches of numpy arrays
for training (shuffled, augmented, resumable from any step) and evaluation (padded to full
batches with a `batch_mask`).

The package by role: `base` (the contract), `checks` (split names, config keys, image sizes,
per-example generators), `sources/` (one module per source), `procedural/` (the scene model,
rasteriser and grammars the offline sources generate from), `readers/` (published formats),
`pipeline`, `augment` and `voc_augment` (batches), `tokenizer` (texts), `cache` (generated
splits on disk) and `figures`.
"""

from __future__ import annotations

import ml_collections

from dllab_jax import registry
from dllab_jax.data.base import ArraySource, Source, SourceInfo
from dllab_jax.errors import UserError

__all__ = [
    "ArraySource",
    "Source",
    "SourceInfo",
    "get_source",
    "registered_sources",
    "text_corpus",
]


def registered_sources() -> list[str]:
    """Every data source name (imports `dllab_jax.data.sources` whole)."""
    return registry.data_sources.names()


def get_source(data_config: ml_collections.ConfigDict, split: str) -> Source:
    """Builds the source `data_config.name` for `split` ('train', 'val', 'test', ...)."""
    return registry.data_sources.get(data_config.name)(data_config, split)


def text_corpus(data_config: ml_collections.ConfigDict) -> list[str]:
    """The training texts of the source `data_config.name`, as its train split offers them
    (`Source.text_corpus`), for a tokenizer to learn from."""
    source = get_source(data_config, "train")
    if not hasattr(source, "text_corpus"):
        raise UserError(
            f"data source {data_config.name!r} has no texts to train a tokenizer on; set "
            "config.data.name to a caption source or config.tokenizer.dir to a tokenizer folder"
        )
    return source.text_corpus()
