"""Config files as specs: "configs/<name>.py[:preset]" -> ConfigDict, and run naming."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import ml_collections

from dllab_jax.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


def split_spec(spec: str) -> tuple[str, str]:
    """'configs/x.py:a,b' -> ('configs/x.py', 'a,b')."""
    path, _, arg = spec.partition(":")
    return path, arg


def load_config_module(path: str):
    """The config file at `path` as a module (its `get_config`, `PRESETS`, `get_sweep`).

    A relative path is tried from the working directory, then from the repository root.
    """
    candidates = [Path(path), REPO_ROOT / path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise UserError(f"config file {path!r} not found (looked in . and {REPO_ROOT})")
    module_spec = importlib.util.spec_from_file_location(f"_config_{found.stem}", found)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `get_config(arg)` from a config file spec, as `config_flags` does (a relative
    path from the working directory, then from the repository root)."""
    path, arg = split_spec(spec)
    module = load_config_module(path)
    config = module.get_config(arg) if arg else module.get_config()
    config.lock()
    return config


def default_workdir(spec: str) -> str:
    """checkpoints/<config name>[-<preset>], e.g. checkpoints/classification-cifar10-vit."""
    path, arg = split_spec(spec)
    name = Path(path).stem
    if arg:
        name += "-" + arg.replace(",", "-").replace("/", "_")
    return str(Path("checkpoints") / name)


def parse_preset(arg: str | None, known: dict[str, str]) -> list[str]:
    """Splits 'a,b' into names and checks them against `known` {name: what it does}."""
    names = [n for n in (arg or "").split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        listing = "; ".join(f"{k}: {v}" for k, v in known.items())
        raise UserError(f"unknown preset {unknown} in the config argument; known: {listing}")
    return names


def base_config() -> ml_collections.ConfigDict:
    """The keys of the generic loop (dllab_jax/train.py), with their defaults.

    Every config file starts from this and sets `task`, `data`, `model` and what its
    experiment changes; a comment here documents each key once for all experiments.
    """
    config = ml_collections.ConfigDict()
    config.task = ""  # a task registered in dllab_jax/tasks/<task>.py
    config.seed = 0  # parameter init and the per-step keys (dropout)
    config.data_seed = 0  # order of training examples and augmentation draws

    config.optimizer = ml_collections.ConfigDict(
        dict(
            name="adamw",  # adam | adamw | sgd
            learning_rate=1e-3,
            schedule="constant",  # constant | exponential | linear | cosine
            decay_rate=0.9,  # exponential: factor per epoch
            warmup_steps=0,
            weight_decay=0.01,  # torch AdamW's default
            amsgrad=False,  # torch's AMSGrad (max of the raw second moment)
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            momentum=0.9,  # sgd only
            nesterov=False,  # sgd only
            grad_clip_norm=0.0,  # 0 = no clipping
            trainable=".*",  # regex over '/'-joined parameter names; the rest is frozen
        )
    )
    config.ema_decay = 0.0  # >0 keeps an EMA of the parameters for evaluation

    config.batch_size = 128  # global, split over all devices
    config.eval_batch_size = 256
    config.num_epochs = 10.0
    config.num_train_steps = -1  # >0 overrides num_epochs
    config.eval_every_epochs = 1.0
    config.eval_every_steps = -1  # >0 overrides eval_every_epochs
    config.log_every_steps = 50
    config.eval_during_training = ("val",)  # splits evaluated every eval_every_*
    config.eval_splits = ("val", "test")  # splits in summary.json
    config.train_eval_limit = 0  # >0: evaluate only the first N training examples

    config.checkpoint = ml_collections.ConfigDict(
        dict(
            every_steps=500,  # also saved at the end and when stopping early
            keep=2,  # latest checkpoints kept for resuming
            best_metric="",  # e.g. 'val/accuracy'; '' = keep no best checkpoint
            best_mode="max",
            eval_which="best",  # --mode=eval reads this one
            async_save=False,  # write checkpoints in a background thread (big models)
        )
    )
    config.early_stopping = ml_collections.ConfigDict(
        dict(metric="", patience=0, mode="max", min_delta=0.0)  # metric '' = off
    )
    # Start from another run's weights, matched by parameter name (dllab_jax/checkpoint.py).
    config.init_from = ml_collections.ConfigDict(
        dict(
            workdir="",  # the other run's workdir, or a published folder ('' = fresh init)
            # dllab (a run of ours) or a published format registered in dllab_jax/weights/
            # (each file's docstring says what it reads): hf_blip, hf_blip_captioner,
            # torchvision_resnet18, dino_vit
            format="dllab",
            which="best",  # best | latest
            dont_load=(),  # regexes of parameter names to keep freshly initialised
            target_prefix="",  # load only names under this prefix here...
            source_prefix="",  # ...from the same names under this prefix there
            make_with="",  # config spec that trains the other run if it is missing
        )
    )
    config.benchmark = ml_collections.ConfigDict(dict(warmup_steps=3, steps=10))
    return config


# ------------------------------------------------------- blocks several config files share
def shrink_for_smoke(
    config: ml_collections.ConfigDict,
    splits: dict[str, tuple[int, int, int]],
    *,
    batch: int,
    eval_batch: int | None = None,
    steps: int,
    eval_every: int,
    log_every: int = 2,
    checkpoint_every: int = 2,
) -> None:
    """The `smoke` preset of a config file: tiny splits and a few steps (tests, CI).

    Args:
      config: the config, changed in place.
      splits: data name -> (num_train, num_val, num_test), for the generated sources; other
        data (a folder, tfds) keeps its splits.
      batch: `batch_size`.
      eval_batch: `eval_batch_size` (default: `batch`).
      steps, eval_every, log_every, checkpoint_every: `num_train_steps`, `eval_every_steps`,
        `log_every_steps` and `checkpoint.every_steps`.
    """
    if config.data.name in splits:
        sizes = splits[config.data.name]
        config.data.num_train, config.data.num_val, config.data.num_test = sizes
    config.batch_size = batch
    config.eval_batch_size = batch if eval_batch is None else eval_batch
    config.num_train_steps = steps
    # A warm-up as long as the smoke run would leave the rate near 0 for all of it.
    config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, steps // 10)
    config.eval_every_steps = eval_every
    config.log_every_steps = log_every
    config.checkpoint.every_steps = checkpoint_every


def use_smoke_pretraining(config: ml_collections.ConfigDict) -> None:
    """Points a smoke run's `init_from` at the smoke variant of the run that makes it.

    Where `init_from.make_with` names the config that trains the weights a run starts from,
    a smoke run must neither read the real run (a smoke model must never stand in for it)
    nor train it: it reads `<make_with>,smoke` from that spec's default workdir
    (checkpoints/retrieval-pretrain-smoke for configs/retrieval.py:pretrain), made if missing.
    """
    if not config.init_from.make_with:
        return
    path, arg = split_spec(config.init_from.make_with)
    config.init_from.make_with = f"{path}:" + ",".join(filter(None, [arg, "smoke"]))
    config.init_from.workdir = default_workdir(config.init_from.make_with)


def carla_folders(**extra) -> ml_collections.ConfigDict:
    """The CARLA folders of the Ljubljana handout (segmentation and colourisation)."""
    return ml_collections.ConfigDict(
        dict(
            name="carla",
            root="data/carla",  # holds data*/CameraRGB/*.png and data*/CameraSeg/*.png
            image_size=(320, 416),  # (H, W); images bilinear, masks nearest
            num_val=500,  # the last 500 + 500 pairs by file name are val and test
            num_test=500,
            **extra,
        )
    )


def unet_recipe(config: ml_collections.ConfigDict, *, num_epochs: float) -> None:
    """The offline training of the Ljubljana U-Nets (segmentation and colourisation): torch
    Adam 1e-3 without weight decay, batch 32 (100 to evaluate), validation every epoch,
    val and test in the summary."""
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0
    config.batch_size = 32
    config.eval_batch_size = 100
    config.num_epochs = num_epochs
    config.eval_every_epochs = 1.0
    config.log_every_steps = 25
    config.eval_splits = ("val", "test")


def carla_recipe(config: ml_collections.ConfigDict) -> None:
    """The handout's training on CARLA: no flips, Adam 1e-4 at a constant rate (whatever
    schedule the offline default uses), batch 4, 10 epochs."""
    config.augment.hflip = False
    config.optimizer.learning_rate = 1e-4
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.batch_size = 4
    config.eval_batch_size = 4
    config.num_epochs = 10.0
    config.log_every_steps = 100
    config.checkpoint.every_steps = 1000


# ------------------------------------------------------------------ validation
# Keys that may hold -1 for "not set" (see base_config's comments).
_UNSET_ALLOWED = {"num_train_steps", "eval_every_steps"}
_CHOICES = {
    "checkpoint.best_mode": ("max", "min"),
    "checkpoint.eval_which": ("best", "latest"),
    "early_stopping.mode": ("max", "min"),
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_probability_key(name: str) -> bool:
    """Keys that are rates of something happening: dropout, drop-path, *_prob, *_fraction."""
    return "dropout" in name or name.startswith("drop_") or name.endswith(("_prob", "_fraction"))


def _is_count_key(name: str) -> bool:
    return name.startswith("num_") or name.endswith(("_steps", "_epochs"))


def validate_config(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Checks the numbers of a config before a run writes anything.

    The generic loop's keys get exact rules (positive batch sizes divisible by the devices,
    positive step counts and intervals, a finite learning rate >= 0, rates in [0, 1)); every
    number of every config also must be finite, rates (`*dropout*`, `drop_*`, `*_prob`,
    `*_fraction`) lie in [0, 1] and counts (`num_*`, `*_steps`, `*_epochs`) be >= 0. Data and
    model keys with stricter meanings are checked by the source or model that reads them.

    Args:
      config: the experiment config.
      num_devices: devices the batch is split over (default: `jax.device_count()`).

    Raises:
      UserError: naming the first bad key, its value and what it must be.
    """
    from flax import traverse_util

    def fail(key: str, value, must: str) -> None:
        raise UserError(f"config.{key}={value!r} is not valid: it must be {must}")

    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    for key, value in flat.items():
        name = key.rsplit(".", 1)[-1]
        values = value if isinstance(value, tuple | list) else (value,)
        for v in values:
            if not _is_number(v):
                continue
            if not math.isfinite(v):
                fail(key, value, "a finite number")
            if _is_probability_key(name) and not 0.0 <= v <= 1.0:
                fail(key, value, "between 0 and 1")
            if _is_count_key(name) and v < 0 and not (name in _UNSET_ALLOWED and v == -1):
                fail(key, value, ">= 0" + (" (or -1: not set)" if name in _UNSET_ALLOWED else ""))

    def get(key: str):
        return flat.get(key)

    def positive_int(key: str) -> None:
        value = get(key)
        if value is not None and not (_is_int(value) and value >= 1):
            fail(key, value, "a positive integer")

    if num_devices is None:
        import jax

        num_devices = jax.device_count()
    for key in ("batch_size", "eval_batch_size"):
        value = get(key)
        if value is None:
            continue
        positive_int(key)
        if value % num_devices:
            fail(key, value, f"a multiple of the {num_devices} devices it is split over")
    for key in ("log_every_steps", "checkpoint.every_steps", "checkpoint.keep", "benchmark.steps"):
        positive_int(key)
    for key in ("num_train_steps", "eval_every_steps"):
        value = get(key)
        if value is not None and not (_is_int(value) and (value >= 1 or value == -1)):
            fail(key, value, "a positive integer, or -1 (not set)")
    for key, steps_key in (
        ("num_epochs", "num_train_steps"),
        ("eval_every_epochs", "eval_every_steps"),
    ):
        value = get(key)
        if value is not None and (get(steps_key) or -1) <= 0 and not value > 0:
            fail(key, value, f"> 0 (or set config.{steps_key})")
    for key in ("seed", "data_seed", "train_eval_limit", "benchmark.warmup_steps"):
        value = get(key)
        if value is not None and not (_is_int(value) and value >= 0):
            fail(key, value, "an integer >= 0")
    # 0 is allowed: a preset that only evaluates published weights takes one step of lr 0.
    for key in (
        "optimizer.learning_rate",
        "optimizer.weight_decay",
        "optimizer.grad_clip_norm",
        "early_stopping.min_delta",
    ):
        value = get(key)
        if value is not None and not (_is_number(value) and value >= 0):
            fail(key, value, ">= 0")
    for key in ("optimizer.b1", "optimizer.b2", "ema_decay"):
        value = get(key)
        if value is not None and not (_is_number(value) and 0 <= value < 1):
            fail(key, value, "in [0, 1)")
    eps = get("optimizer.eps")
    if eps is not None and not (_is_number(eps) and eps > 0):
        fail("optimizer.eps", eps, "a positive number")
    patience = get("early_stopping.patience")
    if patience is not None and not (_is_int(patience) and patience >= 0):
        fail("early_stopping.patience", patience, "an integer >= 0 (0 = off)")
    for key, choices in _CHOICES.items():
        value = get(key)
        if value is not None and value not in choices:
            fail(key, value, f"one of {choices}")
