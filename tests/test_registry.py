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
        if config.get("init_from") and config.init_from.get("format") not in (None, "dllab"):
            named["weight format"].add(config.init_from.format)  # 'dllab' is built in
    return named


REGISTRIES = [registry.tasks, registry.models, registry.data_sources, registry.weight_formats]
# At least this many entries of each kind (import_all found the package's modules).
MIN_ENTRIES = {"weight format": 4}


# Registered entries that no preset names, and where each is exercised instead.
NOT_IN_PRESETS = {
    "data source": {
        # The benchmark swaps it in for a data set that is not on disk (dllab_jax/bench/cases.py).
        "synthetic": "tests/data/sources/test_synthetic.py",
        # Published layouts a user names on the command line (README: real captions; the
        # concept set's original files); no preset points at data that is not shipped.
        "flickr8k": "tests/data/sources/test_flickr8k.py",
        "concepts_folder": "tests/data/sources/test_concepts_folder.py",
    }
}


@pytest.mark.parametrize("kind", REGISTRIES, ids=lambda r: r.kind)
def test_every_registered_entry_is_named_by_some_config_preset(kind, named_by_configs):
    names = kind.names()
    assert len(names) >= MIN_ENTRIES.get(kind.kind, 6)
    reachable = named_by_configs[kind.kind] | set(NOT_IN_PRESETS.get(kind.kind, {}))
    assert set(names) <= reachable, set(names) - reachable


def test_entries_no_preset_names_are_registered_and_tested():
    import ml_collections

    from dllab_jax.bench import cases

    stand_in = cases.synthetic_stand_in(ml_collections.ConfigDict({"name": "cifar10"}))
    assert stand_in.name == "synthetic"
    kinds = {r.kind: r for r in REGISTRIES}
    for kind, entries in NOT_IN_PRESETS.items():
        for name, test_file in entries.items():
            assert name in kinds[kind].names() and (REPO_ROOT / test_file).is_file(), name


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
