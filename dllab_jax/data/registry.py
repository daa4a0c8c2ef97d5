"""The one registry of data sources, keyed by `config.data.name`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import ml_collections

from dllab_jax.data.base import Source
from dllab_jax.errors import UserError

MakeSource = Callable[[ml_collections.ConfigDict, str], Source]

_SOURCES: dict[str, MakeSource] = {}

# Modules that register sources when imported. Importing lazily keeps `import dllab_jax`
# fast and keeps TensorFlow out of runs that never read tfds.
_SOURCE_MODULES = {
    "shapes": "dllab_jax.data.procedural",
    "cifar10": "dllab_jax.data.tfds_sources",
    "folder": "dllab_jax.data.folder",
    "captioned_shapes": "dllab_jax.data.captions",
    "voc_captions": "dllab_jax.data.captions",
    "flickr8k": "dllab_jax.data.captions",
    "scenes": "dllab_jax.data.segmentation",
    "oxford_iiit_pet": "dllab_jax.data.segmentation",
    "cityscapes": "dllab_jax.data.segmentation",
    "carla": "dllab_jax.data.segmentation",
    "voc_segmentation": "dllab_jax.data.voc_segmentation",
    "concepts": "dllab_jax.data.concepts",
    "concepts_folder": "dllab_jax.data.concepts",
    "synthetic": "dllab_jax.data.synthetic",
}


def register(name: str) -> Callable[[MakeSource], MakeSource]:
    """Decorator: registers `make(data_config, split) -> Source` under `name`."""

    def decorator(make: MakeSource) -> MakeSource:
        if name in _SOURCES and _SOURCES[name] is not make:
            raise ValueError(f"data source {name!r} registered twice")
        _SOURCES[name] = make
        return make

    return decorator


def registered_sources() -> list[str]:
    return sorted(set(_SOURCES) | set(_SOURCE_MODULES))


def get_source(data_config: ml_collections.ConfigDict, split: str) -> Source:
    """Builds the source `data_config.name` for `split` ('train', 'val', 'test', ...)."""
    name = data_config.name
    if name not in _SOURCES and name in _SOURCE_MODULES:
        importlib.import_module(_SOURCE_MODULES[name])
    if name not in _SOURCES:
        raise UserError(
            f"unknown data source {name!r}; set config.data.name to one of {registered_sources()}"
        )
    return _SOURCES[name](data_config, split)
