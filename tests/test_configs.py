"""Every config file (configs/*.py) and preset builds and validates."""

import pytest

from dllab_jax import train
from dllab_jax.config_utils import REPO_ROOT, load_config, validate_config


@pytest.mark.parametrize(
    "config_file", sorted(p.name for p in (REPO_ROOT / "configs").glob("*.py"))
)
def test_every_config_file_and_preset_builds(config_file):
    module_path = REPO_ROOT / "configs" / config_file
    namespace = {}
    exec(compile(module_path.read_text(), str(module_path), "exec"), namespace)
    presets = ["", *namespace.get("PRESETS", {})]
    for preset in presets:
        config = load_config(f"configs/{config_file}" + (f":{preset}" if preset else ""))
        assert config.task
        if config.data.name in ("shapes", "scenes"):
            # Offline presets build the whole experiment (data, model, optimiser, state).
            small = load_config(
                f"configs/{config_file}:" + ",".join(filter(None, [preset, "smoke"]))
            )
            exp = train.build_experiment(small)
            assert train.count_params(exp.abstract_state.params) > 0


def test_every_shipped_config_and_preset_validates():
    validated = []
    for path in sorted((REPO_ROOT / "configs").glob("*.py")):
        namespace = {}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        for preset in ["", *namespace.get("PRESETS", {})]:
            config = namespace["get_config"](preset) if preset else namespace["get_config"]()
            validate_config(config, num_devices=1)
            validated.append((path.name, preset))
    # 8 config files with 65 presets when this was written: fewer means some were not found.
    assert len(validated) >= 8 + 65
