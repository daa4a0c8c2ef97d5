"""The one generic training loop. Every experiment runs through `train_and_evaluate`.

What the loop owns (a task never re-implements it):
  * the train state (params, model state such as BatchNorm statistics, optimiser state, step,
    optional EMA), initialised through `jax.eval_shape` + `jit` straight onto the devices
    (the state, the step and `build_experiment` are in `dllab_jax/experiment.py`);
  * one jitted train step with the state donated, data-parallel over every local device
    (state replicated, batch sharded over a `data` mesh axis); the step's randomness is
    `fold_in(base_key, step)`, so no key is carried and a resumed run draws the same keys;
  * evaluation on padded, masked batches (exact for any split size);
  * logging (TensorBoard event files + console, a progress line with steps/s and ETA) and a
    JSON-lines history;
  * orbax checkpoints: the latest K and the best by `config.checkpoint.best_metric`;
    restarting in the same workdir resumes; `config.init_from` loads another run's weights;
  * early stopping, a stop on NaN/inf that keeps the last good checkpoint, and
    `<workdir>/summary.json` at the end;
  * surviving interruption: the config is validated before anything is written, the workdir
    is locked (`run_dir`), SIGTERM/SIGINT save and exit (`preemption`), and whatever moment
    the process dies at, a rerun resumes to the same `metrics.jsonl` and `summary.json`.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any

import flax
import jax
import ml_collections
from absl import logging

from dllab_jax import checkpoint as ckpt_lib
from dllab_jax import config_utils, distributed, logs, plots, preemption, run_dir
from dllab_jax import metrics as metrics_lib
from dllab_jax.data import pipeline
from dllab_jax.errors import UserError
from dllab_jax.experiment import Experiment, TrainingDiverged, build_experiment, count_params

# The state and the step live in dllab_jax/experiment.py; `train.TrainState` and
# `train.train_step` stay importable from here, where users of the loop look for them.
from dllab_jax.experiment import TrainState as TrainState
from dllab_jax.experiment import train_step as train_step
from dllab_jax.init_from import apply_init_from


# --------------------------------------------------------------- init_from
def make_init_from_run_if_missing(config) -> None:
    """Trains the run that `config.init_from` loads when it is missing and
    `config.init_from.make_with` says how (e.g. a pre-training preset); says so."""
    init = config.init_from
    if not (init.workdir and init.make_with and init.format == "dllab"):
        return
    workdir = Path(init.workdir)
    # A run's folder or a shipped stand-in (best/ only); every process decides together,
    # before any of them starts making it.
    present = any((workdir / d).is_dir() for d in (ckpt_lib.LATEST_DIR, ckpt_lib.BEST_DIR))
    if not distributed.any_process(not present):
        return
    message = (
        f"init_from: no checkpoint in {workdir}; making it first with "
        f"`python main.py --config={init.make_with} --workdir={workdir}`"
    )
    maker = config_utils.load_config(init.make_with)
    if maker.init_from.make_with == init.make_with:
        raise UserError(
            f"config.init_from.make_with={init.make_with!r} would make itself; the config it "
            "names must not set init_from.make_with to itself"
        )
    logging.warning(message)
    print(message)
    train_and_evaluate(maker, workdir)


def initial_state(exp: Experiment, ckpts: ckpt_lib.RunCheckpoints):
    """(state, meta of the restored checkpoint or None): resume if a checkpoint exists."""
    restored = ckpts.restore(exp.abstract_state, "latest")
    if restored is not None:
        state, meta = restored
        logging.info("resuming from step %d in %s", meta["step"], ckpts.workdir)
        print(f"resuming from the checkpoint at step {meta['step']} in {ckpts.workdir}")
        return state, meta
    state = exp.init_state_fn(jax.random.key(exp.config.seed))
    if exp.config.init_from.workdir:
        state = apply_init_from(state, exp.config, exp.mesh)
    return state, None


# ------------------------------------------------------------ early stopping
class EarlyStopping:
    """Stops when `metric` has not improved for `patience` evaluations (0 = never)."""

    def __init__(self, cfg, history: logs.History):
        self.metric, self.patience = cfg.metric, cfg.patience
        self.sign = 1.0 if cfg.mode == "max" else -1.0
        self.min_delta = cfg.min_delta
        self.best, self.bad = -math.inf, 0
        for _, value in history.values(self.metric) if self.metric else []:
            self.update(value)

    def update(self, value: float) -> bool:
        """Records an evaluation; True when training should stop."""
        if not self.metric or self.patience <= 0:
            return False
        if self.sign * value > self.best + self.min_delta:
            self.best, self.bad = self.sign * value, 0
        else:
            self.bad += 1
        return self.bad >= self.patience


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def _check_finite(scalars: dict, step: int, ckpts: ckpt_lib.RunCheckpoints) -> None:
    bad = {k: v for k, v in scalars.items() if not math.isfinite(v)}
    if bad:
        last = ckpts.latest_step()
        kept = f"the last good checkpoint (step {last}) is kept" if last else "nothing was saved"
        raise TrainingDiverged(
            f"training diverged by step {step}: {bad}; {kept} in {ckpts.workdir}. Lower "
            "config.optimizer.learning_rate or set config.optimizer.grad_clip_norm"
        )


# ------------------------------------------------------------------ the loop
def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *, stop_at_step: int | None = None
) -> dict:
    """Trains, evaluates, checkpoints and reports one run; returns the summary.

    The config is checked before anything is written; the workdir is locked for this process
    (a second one stops at once); a start that fails leaves the workdir as it was. SIGTERM and
    SIGINT finish the current step, save and raise `preemption.Interrupted`; rerunning resumes
    at that step with the same batches, keys and logged numbers as an uninterrupted run.

    Args:
      config: the experiment config (see configs/).
      workdir: where checkpoints, logs, figures and `summary.json` go; a workdir with a
        checkpoint is resumed.
      stop_at_step: stop (as a SIGKILL would, without saving) before this step; for
        tests of resumption and time-boxed runs.
    """
    config_utils.validate_config(config)
    with (
        run_dir.claim_for_all_processes(workdir, what="train") as run,
        preemption.StopSignals() as signals,
    ):
        return _train(config, run, signals, stop_at_step)


def _best_record(history: logs.History, metric: str, mode: str) -> dict | None:
    """The history's evaluation record with the best `metric` (the first of equals)."""
    best = None
    for record in history.records:
        if metric in record and (best is None or _is_better(record[metric], best[metric], mode)):
            best = record
    return best


def _train(config, run: run_dir.RunDirectory, signals: preemption.StopSignals, stop_at_step):
    workdir = run.path
    make_init_from_run_if_missing(config)
    exp = build_experiment(config, workdir=workdir)
    ckpts = ckpt_lib.RunCheckpoints(
        workdir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save
    )
    try:
        state, restored_meta = initial_state(exp, ckpts)
        # Nothing below refuses a start: from here on the workdir is this run's.
        run.started()
        start_step = int(restored_meta["step"]) if restored_meta else 0
        ckpts.set_aside_after(start_step)
        primary = distributed.is_primary()  # logs, figures and summaries: process 0 only
        if primary:
            ckpt_lib.write_json(workdir / "config.json", config.to_dict())
        history = logs.History(
            workdir, resume_step=start_step if restored_meta else None, write=primary
        )
        writer = logs.create_writer(workdir, enabled=primary)
        try:
            return _train_loop(
                exp, ckpts, history, writer, state, restored_meta, start_step, signals, stop_at_step
            )
        finally:
            writer.close()
    finally:
        ckpts.close()


def _train_loop(
    exp, ckpts, history, writer, state, restored_meta, start_step, signals, stop_at_step
):
    config, workdir = exp.config, ckpts.workdir
    # A run that stopped early stays stopped; one that ran out of steps continues when the
    # config now asks for more.
    finished = bool(restored_meta and restored_meta.get("stopped_early"))
    if not restored_meta:
        writer.write_hparams(_flat_hparams(config))
    num_params = count_params(state.params)
    logging.info(
        "%s: %d parameters, %d steps (%d per epoch), global batch %d on %d device(s)",
        config.model.name,
        num_params,
        exp.total_steps,
        exp.steps_per_epoch,
        config.batch_size,
        exp.mesh.devices.size,
    )

    meta_base = {"model": exp.task.model_spec(), "task": config.task, "config": config.to_dict()}
    best_metric, best_mode = config.checkpoint.best_metric, config.checkpoint.best_mode
    best = _best_record(history, best_metric, best_mode) if best_metric else None
    best_value = best[best_metric] if best else None
    if best and best["step"] == start_step and ckpts.best_step() != start_step:
        # Killed between the latest and the best save of one step: the best is this state.
        results = {k: v for k, v in best.items() if k != "step"}
        ckpts.save_best(start_step, state, dict(meta_base, metrics=results))
    early = EarlyStopping(config.early_stopping, history)

    # The training metrics of the logging window the checkpoint was saved in, so that the
    # first window after a resume averages the same steps as an uninterrupted run's.
    step_metrics: list[dict] = list(restored_meta.get("train_window", [])) if restored_meta else []
    last_saved = start_step if restored_meta else None
    stopped_early = False

    def save_latest(step: int) -> None:
        nonlocal last_saved
        if step_metrics:  # never save a state whose recent losses were not checked
            _check_finite(metrics_lib.mean_of_steps(step_metrics), step, ckpts)
        window = [{k: float(v) for k, v in m.items()} for m in jax.device_get(step_metrics)]
        meta = dict(meta_base, stopped_early=stopped_early, train_window=window)
        ckpts.save_latest(step, state, meta)
        last_saved = step

    def keep_work(step: int) -> bool:
        """Saves `step` unless it is saved already; True when a checkpoint of it exists."""
        if last_saved != step and step > 0:  # step 0 is the seed's initial state
            save_latest(step)
        ckpts.wait()
        return last_saved == step

    def stop_on_signal(step: int) -> None:
        requested = signals.requested
        if multi_process:  # every process stops at the same step, whichever got the signal
            requested = (
                (requested or signal.SIGTERM) if distributed.any_process(requested) else None
            )
        if requested is None:
            return
        saved = keep_work(step)
        writer.flush()
        raise preemption.Interrupted(requested, step, saved=saved)

    def stop_on_data_error(error: UserError, step: int) -> None:
        """Bad data met mid-run (an image that does not decode): keep the work, then stop."""
        if keep_work(step):
            raise UserError(f"{error} (a checkpoint at step {step} is kept)") from None
        raise error

    multi_process = distributed.process_count() > 1
    progress = logs.progress_reporter(exp.total_steps, writer, config.log_every_steps)
    batches = pipeline.prefetch(
        pipeline.train_batches(
            exp.task.source("train"),
            config.batch_size,
            seed=config.data_seed,
            start_step=start_step,
            augment=exp.task.augment(),
            rows=exp.train_rows,  # this process's rows of each global batch
        )
    )
    train_start = time.time()
    step = start_step
    stop_on_signal(step)  # a signal during start-up (compiling, making init_from)
    while step < exp.total_steps and not finished:
        if stop_at_step is not None and step >= stop_at_step:
            ckpts.wait()
            return {}
        try:
            batch = next(batches)
        except UserError as error:
            stop_on_data_error(error, step)
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            state, metrics = exp.jitted_train_step(state, exp.place_train(batch))
        step_metrics.append(metrics)
        step += 1
        progress(step)
        is_last = step == exp.total_steps

        if step % config.log_every_steps == 0 or is_last:
            scalars = {f"train/{k}": v for k, v in metrics_lib.mean_of_steps(step_metrics).items()}
            step_metrics = []
            _check_finite(scalars, step, ckpts)
            writer.write_scalars(step, scalars)
            history.append(step, scalars)

        new_best = None
        if step % exp.eval_every == 0 or is_last:
            try:
                results = exp.evaluate(state, config.eval_during_training)
            except UserError as error:
                stop_on_data_error(error, step)
            writer.write_scalars(step, results)
            history.append(step, results)
            if best_metric:
                if best_metric not in results:
                    raise UserError(
                        f"config.checkpoint.best_metric={best_metric!r} is not among the "
                        f"evaluation metrics {sorted(results)}"
                    )
                if _is_better(results[best_metric], best_value, best_mode):
                    best_value = results[best_metric]
                    new_best = results
            if early.metric and early.metric not in results:
                raise UserError(
                    f"config.early_stopping.metric={early.metric!r} is not among the "
                    f"evaluation metrics {sorted(results)}"
                )
            if early.update(results.get(early.metric, 0.0)):
                logging.info("early stopping at step %d: %s stalled", step, early.metric)
                print(
                    f"early stopping at step {step}: {early.metric} has not improved for "
                    f"{early.patience} evaluations"
                )
                stopped_early = True

        regular = step % config.checkpoint.every_steps == 0 or is_last or stopped_early
        # A new best is saved as the latest too, and first: whatever moment the process dies
        # at, the best checkpoint is never newer than the one a rerun resumes from.
        if regular or new_best is not None:
            save_latest(step)
        if new_best is not None:
            ckpts.save_best(step, state, dict(meta_base, metrics=new_best))
        stop_on_signal(step)
        if stopped_early:
            break
    ckpts.wait()
    train_time = time.time() - train_start

    summary = final_evaluation(exp, state, ckpts, workdir, history)
    summary.update(
        num_params=num_params,
        step=int(state.step),
        stopped_early=stopped_early or bool(restored_meta and restored_meta.get("stopped_early")),
        train_time_s=round(train_time, 2),
    )
    if distributed.is_primary():
        ckpt_lib.write_json(workdir / "summary.json", summary)
    writer.flush()
    logging.info("summary: %s", summary)
    return summary


def final_evaluation(exp: Experiment, state, ckpts, workdir: Path, history) -> dict:
    """Final metrics on `config.eval_splits`, for the final and the best checkpoint, plus the
    figures; returns the summary without the run-level fields."""
    config = exp.config
    metrics, artifacts = exp.evaluate_with_artifacts(state, config.eval_splits)
    summary: dict[str, Any] = {"metrics": metrics}
    report_state = state
    best_step = ckpts.best_step() if config.checkpoint.best_metric else None
    if best_step is not None and int(best_step) == int(state.step):
        # The final state is the best one: its metrics were just computed (evaluating the
        # classification default's 20k training images again cost as much as an epoch).
        metrics.update({f"best/{k}": v for k, v in list(metrics.items())})
        summary["best_step"] = int(best_step)
    elif best_step is not None:
        best_state, best_meta = ckpts.restore(exp.abstract_state, "best")
        best, artifacts = exp.evaluate_with_artifacts(best_state, config.eval_splits)
        metrics.update({f"best/{k}": v for k, v in best.items()})
        summary["best_step"] = int(best_meta["step"])
        # The report draws the best state, from its evaluation's artifacts.
        report_state = best_state
    # Evaluations made once per run (samples generated and probed, say) join the metrics.
    run_eval = exp.task.evaluate_run(exp.model, report_state.variables(), workdir, exp.place)
    metrics.update(run_eval.metrics)
    if distributed.is_primary():  # the figures and the printout: process 0 only
        plots.curves(
            history.records,
            exp.task.curve_metrics,
            exp.steps_per_epoch,
            workdir / "curves.png",
        )
        exp.task.report(artifacts, run_eval.artifacts, workdir)
        for key, value in sorted(metrics.items()):
            print(f"{key}: {value:.4f}")
    return summary


def _flat_hparams(config) -> dict:
    flat = flax.traverse_util.flatten_dict(config.to_dict(), sep=".")
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat.items()}


# ------------------------------------------------------------------ eval mode
def evaluate_checkpoint(config, workdir: str | Path) -> dict:
    """`--mode=eval`: metrics of the workdir's checkpoint (`config.checkpoint.eval_which`)."""
    config_utils.validate_config(config)
    with run_dir.claim_for_all_processes(workdir, what="eval") as run:
        exp = build_experiment(config, workdir=run.path)
        ckpts = ckpt_lib.RunCheckpoints(run.path, keep=config.checkpoint.keep)
        try:
            which = config.checkpoint.eval_which
            restored = ckpts.restore(exp.abstract_state, which)
            if restored is None and which == "best":
                restored = ckpts.restore(exp.abstract_state, "latest")
            if restored is None:
                raise UserError(f"no checkpoint in {run.path}; train first (--mode=train)")
            run.started()
            state, meta = restored
            results = exp.evaluate(state, config.eval_splits)
        finally:
            ckpts.close()
        out = {"step": int(meta["step"]), "checkpoint": which, "metrics": results}
        if distributed.is_primary():
            ckpt_lib.write_json(run.path / "eval.json", out)
    if distributed.is_primary():
        for key, value in sorted(results.items()):
            print(f"{key}: {value:.4f}")
    return out
