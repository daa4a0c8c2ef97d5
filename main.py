"""dllab_jax command line: one experiment per config file.

python main.py --config=configs/classification.py[:preset,...] [--config.key=value ...]
               [--workdir=checkpoints/<config>-<preset>] [--mode=train|eval|benchmark]
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dllab_jax import config_utils
from dllab_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, with an optional preset after ':'.", lock_config=True
)
flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, logs, figures); default checkpoints/<config>."
)
flags.DEFINE_enum("mode", "train", ["train", "eval", "benchmark"], "What to do.")
flags.mark_flags_as_required(["config"])


def _hide_gpus_from_tensorflow() -> None:
    """tfds and clu import TensorFlow; without this it reserves the GPU memory JAX needs."""
    try:
        import tensorflow as tf
    except ImportError:
        return
    tf.config.set_visible_devices([], "GPU")


def _config_spec() -> str:
    """The --config value as given ('configs/x.py:preset'), for the default workdir."""
    for arg in sys.argv[1:]:
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return config_utils.split_spec(FLAGS["config"].config_filename)[0]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _hide_gpus_from_tensorflow()
    # Imported after TensorFlow is kept off the GPU.
    from dllab_jax import benchmark, train

    config = FLAGS.config
    workdir = FLAGS.workdir or config_utils.default_workdir(_config_spec())
    logging.info("config:\n%s", config)
    print(f"{FLAGS.mode}: {_config_spec()} -> {workdir}")
    try:
        if FLAGS.mode == "train":
            train.train_and_evaluate(config, workdir)
        elif FLAGS.mode == "eval":
            train.evaluate_checkpoint(config, workdir)
        else:
            benchmark.run_benchmark(config, workdir)
    except UserError as error:
        # Bad input or a diverged run: one line that says what to do, no traceback.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
