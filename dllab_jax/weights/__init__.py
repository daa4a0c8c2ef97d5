"""Importers of weights published in other formats, one file per format.

`config.init_from.format` names a format; each registers its reader in its own module with
`@registry.weight_formats.register("<format>")` (see `dllab_jax.registry`), and
`init_from.read_init_source` looks it up ('dllab', a run of ours, is built in). A reader is

    read(path, which, *, sharding) -> ({"params": ..., ["model_state": ...]}, meta)

as `checkpoint.read_variables` returns: the arrays named as our model's parameters, ready for
`init_from.load_by_name`; `which` is ignored (a published file holds one set of weights).

Every format shares `reader.py` (torch .pth/.bin, safetensors, sharded safetensors, a HF
folder's config.json) and `convert.py` (the one checked tensor -> parameter path: names
mapped by a rule, every parameter found with its shape or a one-line UserError). Nothing here
imports torch or transformers at module level: the registry imports every module of this
package to list the formats, and a safetensors file needs neither.
"""
