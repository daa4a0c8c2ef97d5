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


def test_classification_handout_presets_keep_the_handout_schedule():
    # The offline default trains faster (lr 2e-3, warm-up, cosine); the data presets must keep
    # the handout's AdamW + AMSGrad, lr 1e-3, x0.9 per epoch, 30 epochs, no augmentation.
    for preset in ("cifar10", "cifar10,vit", "cifar10,resnet18", "birds"):
        config = load_config(f"configs/classification.py:{preset}")
        opt = config.optimizer
        recipe = (opt.name, opt.learning_rate, opt.schedule, opt.decay_rate, opt.warmup_steps)
        assert recipe == ("adamw", 1e-3, "exponential", 0.9, 0), preset
        assert opt.amsgrad and config.num_epochs == 30.0 and config.batch_size in (128, 64)
        assert (config.augment.random_crop_padding, config.augment.hflip) == (0, False)
    vit = load_config("configs/classification.py:cifar10,vit").model
    assert (vit.patch_size, vit.embed_dim, vit.num_layers, vit.dropout) == (4, 256, 6, 0.2)
    offline = load_config("configs/classification.py")
    assert (offline.optimizer.schedule, offline.optimizer.learning_rate) == ("cosine", 2e-3)


def test_carla_presets_keep_the_handout_recipe_whatever_the_offline_schedule():
    for spec in ("segmentation.py:carla", "segmentation.py:carla,fcn32", "colorization.py:carla"):
        config = load_config(f"configs/{spec}")
        opt = config.optimizer
        assert (opt.name, opt.learning_rate, opt.schedule, opt.warmup_steps) == (
            "adam",
            1e-4,
            "constant",
            0,
        ), spec
        assert (config.batch_size, config.num_epochs, config.augment.hflip) == (4, 10.0, False)
    offline = load_config("configs/segmentation.py").optimizer
    assert (offline.learning_rate, offline.schedule, offline.warmup_steps) == (4e-3, "cosine", 100)
