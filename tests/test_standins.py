"""The pre-trained stand-ins shipped in dllab_jax/standins/: each loads through
`config.init_from` as a run does and scores what its record says; export copies a run."""

import json

import jax
import pytest

from dllab_jax import standins, train
from dllab_jax.config_utils import load_config
from dllab_jax.errors import UserError
from dllab_jax.init_from import apply_init_from


def _json(tree):
    return json.loads(json.dumps(tree))


def test_every_default_that_names_a_stand_in_finds_it():
    config = load_config("configs/seg_heads.py")
    assert config.init_from.workdir == standins.path("seg_heads_backbone")
    assert "seg_heads_backbone" in standins.names()


@pytest.mark.slow
@pytest.mark.parametrize("name", standins.names())
def test_a_shipped_stand_in_loads_and_scores_its_record(name):
    record = standins.record(name)
    config = load_config(record["config_spec"])
    # The recipe in the code is still the one that made it.
    for key in ("model", "data", "optimizer"):
        assert _json(config[key].to_dict()) == record["config"][key], key
    # Scored on val, which does not depend on the training split's size.
    config.data.num_train = config.batch_size
    config.init_from.workdir = standins.path(name)
    exp = train.build_experiment(config)
    state = apply_init_from(exp.init_state_fn(jax.random.key(1)), config, exp.mesh)
    metrics = exp.evaluate(state, ("val",))
    assert metrics[record["best_metric"]] == pytest.approx(record["best_value"], rel=1e-4)


def test_export_needs_a_finished_run(tmp_path):
    with pytest.raises(UserError, match=r"no summary\.json"):
        standins.export(tmp_path, "x", "python main.py --config=configs/seg_heads.py:pretrain")
    with pytest.raises(UserError, match="--config="):
        standins.export(tmp_path, "x", "python main.py")
