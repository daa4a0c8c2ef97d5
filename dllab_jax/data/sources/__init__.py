"""The data sources, one module per source, named as `config.data.name` names it.

A module registers `make(data_config, split) -> Source` (see `dllab_jax.data.base.Source`)
with `@registry.data_sources.register("<name>")`; `dllab_jax.data.get_source` imports
`dllab_jax.data.sources.<name>` to find it (or, failing that, every module here). So modules
here import nothing heavy (TensorFlow, torch, transformers) at module level.

A new source is one new file here: parse `config.data` with `dllab_jax.data.checks`,
generate (`dllab_jax.data.procedural`) or read (`dllab_jax.data.readers`), return a `Source`.
"""
