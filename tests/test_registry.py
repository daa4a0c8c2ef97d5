"""Extension by convention (dllab_jax/registry.py): every plug-in is found by its own module,
and every registered one is reachable from a config preset, so the smoke tests that iterate the
configs exercise it."""

import pathlib

import pytest

from dllab_jax import registry
from dllab_jax.config_utils import load_config
from dllab_jax.errors import UserError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _every_preset_config():
    for path in sorted((REPO_ROOT / "configs").glob("*.py")):
        namespace = {}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        for preset in ["", *namespace.get("PRESETS", {})]:
            yield load_config(f"configs/{path.name}" + (f":{preset}" if preset else ""))


@pytest.fixture(scope="module")
def named_by_configs():
    named = {"task": set(), "model": set(), "data source": set(), "weight format": set()}
    for config in _every_preset_config():
        named["task"].add(config.task)
        named["model"].add(config.model.name)
        named["data source"].add(config.data.name)
        if config.get("init_from") and config.init_from.get("format"):
            named["weight format"].add(config.init_from.format)
    return named


REGISTRIES = [registry.tasks, registry.models]


@pytest.mark.parametrize("kind", REGISTRIES, ids=lambda r: r.kind)
def test_every_registered_entry_is_named_by_some_config_preset(kind, named_by_configs):
    names = kind.names()
    assert len(names) >= 6
    assert set(names) <= named_by_configs[kind.kind], set(names) - named_by_configs[kind.kind]


@pytest.mark.parametrize("kind", REGISTRIES, ids=lambda r: r.kind)
def test_every_name_a_config_uses_is_registered(kind, named_by_configs):
    assert named_by_configs[kind.kind] - {""} <= set(kind.names())


def test_a_registry_holds_only_what_registered_with_it():
    fresh = registry.Registry("task", "dllab_jax.tasks", "config.task")
    # The module `classification` registers into the shared registry; a fresh one has nothing.
    with pytest.raises(UserError, match=r"unknown task 'classification'; set config.task to"):
        fresh.get("classification")
    assert registry.tasks.get("classification").__name__ == "ClassificationTask"


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(UserError, match=r"unknown model 'resnet19'.*'resnet18'"):
        registry.models.get("resnet19")


def test_two_entries_under_one_name_are_refused():
    fresh = registry.Registry("model", "dllab_jax.models", "config.model.name")

    @fresh.register("twice")
    class First:
        pass

    class Second:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        fresh.register("twice")(Second)
    assert fresh.register("twice")(First) is First
