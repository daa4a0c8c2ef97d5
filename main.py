"""dllab_jax command line: one experiment per config file.

python main.py --config=configs/classification.py[:preset,...] [--config.key=value ...]
               [--workdir=checkpoints/<config>-<preset>] [--mode=train|eval|benchmark]
python main.py --config=configs/seg_heads.py --mode=sweep|report [--sweep.seeds=3]
               [--sweep.rows=a,b] [--sweep.print_commands]   (dllab_jax/lab/commands.py)
"""

from __future__ import annotations

import os
import sys

# TensorFlow (imported by the tfds sources, and by tensorboard when installed) prints
# CPU-feature banners unless told not to.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from dllab_jax import config_utils, distributed, performance
from dllab_jax.errors import Stopped, UserError, one_line_errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, with an optional preset after ':'.", lock_config=True
)
flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, logs, figures); default checkpoints/<config>."
)
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval", "benchmark", "sweep", "report"],
    "What to do: sweep runs the config's comparison (its get_sweep()), report rebuilds its report.",
)
config_flags.DEFINE_config_dict(
    "sweep",
    ml_collections.ConfigDict(
        dict(
            seeds=1,  # runs per row, seeds 0 .. seeds - 1 (config.seed and config.data_seed)
            rows="",  # comma-separated row names; '' = every row
            print_commands=False,  # print one main.py command per row and seed, run nothing
        )
    ),
    "--mode=sweep / report: seeds, rows, print_commands.",
)
# Multi-process runs (dllab_jax/distributed.py; README "Running on a cluster"). Under SLURM's
# srun or Open MPI's mpirun JAX finds these itself; elsewhere give all three on every process.
flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0's coordinator (multi-process runs)."
)
flags.DEFINE_integer("num_processes", None, "How many processes the run has.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
flags.mark_flags_as_required(["config"])


def _hide_gpus_from_tensorflow() -> None:
    """Where TensorFlow is installed (the `[tfds]` extra), tfds and tensorboard import it;
    without this it reserves the GPU memory JAX needs."""
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


def _explain_flag_error(argv: list[str], error: Exception) -> str:
    """Turns a config_flags parsing error into one line that names the bad key."""
    if isinstance(error, UserError):  # e.g. an unknown preset, raised by get_config
        return str(error)
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    try:
        config = config_utils.load_config(spec) if spec else None
    except Exception:  # the config file itself is broken: report the original error
        config = None
    if config is not None:
        for arg in argv:
            if not arg.startswith("--config."):
                continue
            key = arg[len("--config.") :].split("=", 1)[0]
            node, parts = config, key.split(".")
            for depth, part in enumerate(parts):
                if not hasattr(node, "keys") or part not in node:
                    parent = ".".join(parts[:depth]) or "the config"
                    known = sorted(node.keys()) if hasattr(node, "keys") else []
                    return f"unknown config key {key!r} (--config.{key}); {parent} has keys {known}"
                node = node[part]
    first = str(error).strip().splitlines()
    return f"bad flags: {first[-1] if first else type(error).__name__}"


def _missing_config_file(argv: list[str]) -> str | None:
    """The --config file when it does not exist, looked up as `config_flags` does."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    path = config_utils.split_spec(spec)[0]
    return None if os.path.isfile(path) else path


def _parse_flags(argv: list[str]) -> list[str]:
    missing = _missing_config_file(argv)
    if missing is not None:
        # config_flags would raise two chained OSErrors, later, at the first access.
        in_repo = config_utils.REPO_ROOT / missing
        hint = f"use --config={in_repo}" if in_repo.is_file() else "the configs are in configs/"
        print(
            f"error: config file {missing!r} not found (relative to {os.getcwd()}); {hint}",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        return FLAGS(argv)
    except Exception as error:  # config_flags raises several types for bad overrides
        print(f"error: {_explain_flag_error(argv, error)}", file=sys.stderr)
        sys.exit(2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    performance.configure_xla()  # before any JAX backend starts (XLA reads flags once)
    _hide_gpus_from_tensorflow()
    # Imported after TensorFlow is kept off the GPU.
    from dllab_jax import benchmark, logs, train

    logs.quiet_library_logs()
    config = FLAGS.config
    if FLAGS.mode in ("sweep", "report"):
        _sweep_or_report()
        return
    workdir = FLAGS.workdir or config_utils.default_workdir(_config_spec())
    logging.info("config:\n%s", config)
    # Bad input or a diverged run: one line that says what to do, no traceback, status 2;
    # SIGTERM / SIGINT: saved and stopped, status 128 + signal (preemption.Interrupted).
    with one_line_errors():
        # Before anything starts a JAX backend; a single process is left as it is.
        if distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id):
            logging.info(
                "process %d of %d", distributed.jax_process_index(), distributed.process_count()
            )
        if distributed.is_primary():
            print(f"{FLAGS.mode}: {_config_spec()} -> {workdir}")
        try:
            if FLAGS.mode == "train":
                train.train_and_evaluate(config, workdir)
            elif FLAGS.mode == "eval":
                train.evaluate_checkpoint(config, workdir)
            else:
                benchmark.run_benchmark(config, workdir)
        except Stopped:  # every process stopped at the same step (preemption): no loss
            distributed.finished()
            raise
        distributed.finished()


def _sweep_or_report() -> None:
    from dllab_jax.lab import commands

    options = FLAGS.sweep
    with one_line_errors():
        if FLAGS.coordinator_address or FLAGS.num_processes or distributed.detected_launcher():
            raise UserError(
                f"--mode={FLAGS.mode} runs its rows as separate commands; for multi-process "
                "rows, print them with --sweep.print_commands and launch each as its own job"
            )  # a failed or interrupted run stops the sweep with its status
        commands.sweep_or_report(
            _config_spec(),
            FLAGS.mode,
            sweep_dir=FLAGS.workdir,
            seeds=options.seeds,
            rows=options.rows,
            print_commands=options.print_commands,
            # What the user set on the config goes to every run, after the row's own.
            extra_args=[a for a in sys.argv[1:] if a.startswith("--config.")],
        )


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
