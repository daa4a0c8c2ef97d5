"""Fixtures of the task tests (beside tests/conftest.py's): a pre-training run whose
parameters a test compares with, and the tiny random BLIP configuration the faithful-path
stand-ins of retrieval and captioning share."""

import flax
import jax
import pytest


@pytest.fixture(scope="session")
def pretrained_params():
    """pretrained_params(spec, workdir) -> (workdir, {'a/b': array}): trains the config `spec`
    in `workdir` and reads the flattened parameters of its best checkpoint."""
    from dllab_jax import checkpoint, train
    from dllab_jax.config_utils import load_config

    def run(spec, workdir):
        train.train_and_evaluate(load_config(spec), workdir)
        variables, _ = checkpoint.read_variables(workdir, "best", items=("params",))
        flat = flax.traverse_util.flatten_dict(jax.device_get(variables["params"]), sep="/")
        return workdir, flat

    return run


@pytest.fixture(scope="session")
def tiny_blip_config():
    """tiny_blip_config(vocab_size, max_positions, text_ids, **blip_kwargs) -> a transformers
    BlipConfig with two-layer, width-32 towers on 16x16 images (patch 8), built in
    milliseconds; `text_ids` holds the text config's bos/eos/pad/sep token ids."""

    def make(vocab_size, max_positions, text_ids, **blip_kwargs):
        from transformers import BlipConfig

        tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2)
        return BlipConfig(
            vision_config=dict(**tower, num_attention_heads=2, image_size=16, patch_size=8),
            text_config=dict(
                **tower,
                vocab_size=vocab_size,
                num_attention_heads=2,
                max_position_embeddings=max_positions,
                **text_ids,
            ),
            **blip_kwargs,
        )

    return make
