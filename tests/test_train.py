"""The generic loop (dllab_jax/train.py) end to end on the E1 smoke preset (4 simulated CPU
devices): summaries, resuming, divergence, init_from, eval mode, early stopping, presets on
tiny real-format data."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dllab_jax import checkpoint, logs, tasks, train
from dllab_jax.config_utils import load_config
from dllab_jax.errors import UserError


@pytest.mark.slow
def test_smoke_run_writes_summary_checkpoints_logs_and_figures(finished_run, smoke_config):
    workdir, summary = finished_run
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["step"] == 6
    exp = train.build_experiment(smoke_config())
    assert on_disk["num_params"] == train.count_params(exp.abstract_state.params)
    for split in ("train", "val", "test"):
        for name in ("accuracy", "per_class_accuracy", "loss"):
            assert math.isfinite(on_disk["metrics"][f"{split}/{name}"])
            assert math.isfinite(on_disk["metrics"][f"best/{split}/{name}"])
    assert 0.0 <= on_disk["metrics"]["val/accuracy"] <= 1.0
    assert on_disk["best_step"] in (3, 6)
    assert (workdir / "curves.png").stat().st_size > 1000
    assert (workdir / "confusion_val.png").exists()
    assert list(workdir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if "val/accuracy" in r] == [3, 6]
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
        4,
        6,
    ]  # keep=2 of the saves at 2, 4, 6


@pytest.mark.slow
def test_summary_val_metrics_equal_the_last_evaluation_during_training(finished_run):
    workdir, summary = finished_run
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in history if "val/accuracy" in r][-1]
    assert summary["metrics"]["val/loss"] == pytest.approx(last_eval["val/loss"], rel=1e-6)


@pytest.mark.slow
def test_loss_goes_down_on_a_fixed_seed(tmp_path, smoke_config):
    # Without augmentation: the test is about optimisation, not about the data pipeline.
    config = smoke_config(
        **{
            "num_train_steps": 40,
            "eval_every_steps": 40,
            "log_every_steps": 10,
            "augment.random_crop_padding": 0,
            "augment.hflip": False,
        }
    )
    config.data.num_train = 256
    config.batch_size = 32
    train.train_and_evaluate(config, tmp_path)
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in history if "train/loss" in r]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
def test_interrupted_run_resumes_and_ends_with_the_same_numbers(
    tmp_path, finished_run, smoke_config
):
    _, uninterrupted = finished_run
    workdir = tmp_path / "run"
    assert train.train_and_evaluate(smoke_config(), workdir, stop_at_step=5) == {}
    assert checkpoint.RunCheckpoints(workdir).latest_step() == 4
    resumed = train.train_and_evaluate(smoke_config(), workdir)
    assert resumed["step"] == 6
    for key, value in uninterrupted["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, smoke_config):
    train.train_and_evaluate(smoke_config(num_train_steps=4), tmp_path)
    good = checkpoint.read_variables(tmp_path, "latest")[0]["params"]
    # From step 5 on the loss is NaN (a NaN learning rate is refused as bad input).
    task_class = type(tasks.get_task(smoke_config()))
    real_loss = task_class.loss
    monkeypatch.setattr(
        task_class,
        "loss",
        lambda self, *a, **k: (lambda out: (out[0] * np.nan, out[1]))(real_loss(self, *a, **k)),
    )
    with pytest.raises(train.TrainingDiverged, match=r"last good checkpoint \(step 4\)"):
        train.train_and_evaluate(smoke_config(num_train_steps=8), tmp_path)
    assert checkpoint.RunCheckpoints(tmp_path).latest_step() == 4
    kept = checkpoint.read_variables(tmp_path, "latest")[0]["params"]
    jax.tree.map(np.testing.assert_array_equal, good, kept)


def _make_the_loss_nan(monkeypatch, config):
    task_class = type(tasks.get_task(config))
    real = task_class.loss

    def nan_loss(self, *args, **kwargs):
        loss, aux = real(self, *args, **kwargs)
        return loss * np.nan, aux

    monkeypatch.setattr(task_class, "loss", nan_loss)


@pytest.mark.slow
def test_the_nan_message_says_no_checkpoint_was_saved_when_none_was(
    tmp_path, monkeypatch, resilient_config, run_files
):
    _make_the_loss_nan(monkeypatch, resilient_config())
    with pytest.raises(train.TrainingDiverged, match="nothing was saved"):
        train.train_and_evaluate(resilient_config(), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() or not run_files.steps(
        tmp_path / "run", "checkpoints"
    )


@pytest.mark.slow
def test_restoring_a_checkpoint_of_another_architecture_is_a_clear_error(
    finished_run, smoke_config
):
    workdir, _ = finished_run
    other = smoke_config(**{"model.widths": (8, 8, 8)})
    with pytest.raises(UserError, match="does not fit this config"):
        train.evaluate_checkpoint(other, workdir)


@pytest.mark.slow
def test_init_from_loads_by_name_and_rejects_shape_mismatches(finished_run, tmp_path, smoke_config):
    source_dir, _ = finished_run
    source = checkpoint.read_variables(source_dir, "best")[0]
    config = smoke_config(
        **{"init_from.workdir": str(source_dir), "init_from.dont_load": ("head/.*",)}
    )
    fresh = train.build_experiment(config)
    state, meta = train.initial_state(fresh, checkpoint.RunCheckpoints(tmp_path / "a"))
    assert meta is None
    flat_new = dict(jax.tree_util.tree_leaves_with_path(state.params))
    flat_src = dict(jax.tree_util.tree_leaves_with_path(source["params"]))
    for path, value in flat_new.items():
        name = jax.tree_util.keystr(path)
        if "head" in name:
            assert not np.array_equal(value, flat_src[path]), name
        else:
            np.testing.assert_array_equal(value, flat_src[path], err_msg=name)
    mismatch = smoke_config(**{"init_from.workdir": str(source_dir), "model.widths": (16, 32, 48)})
    exp = train.build_experiment(mismatch)
    with pytest.raises(UserError, match="has shape"):
        train.initial_state(exp, checkpoint.RunCheckpoints(tmp_path / "b"))


@pytest.mark.slow
def test_eval_mode_reproduces_the_summary(finished_run, smoke_config):
    workdir, summary = finished_run
    out = train.evaluate_checkpoint(smoke_config(), workdir)
    assert json.loads((workdir / "eval.json").read_text())["step"] == summary["best_step"]
    for key, value in out["metrics"].items():
        assert value == pytest.approx(summary["metrics"][f"best/{key}"], rel=1e-6)


@pytest.mark.slow
def test_cifar10_preset_trains_under_tfds_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    config = load_config("configs/classification.py:cifar10,smoke")
    assert (config.data.train_split, config.data.val_split) == ("train[:40000]", "train[40000:]")
    with tfds.testing.mock_data(num_examples=32):
        summary = train.train_and_evaluate(config, tmp_path)
    assert summary["step"] == 6
    assert 0.0 <= summary["metrics"]["test/accuracy"] <= 1.0


@pytest.mark.slow
def test_birds_preset_trains_on_a_tiny_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 8), ("valid", 2), ("test", 2)):
        for species in ("ALBATROSS", "CROW", "ZEBRA DOVE"):
            folder = tmp_path / "birds" / split / species
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    config = load_config("configs/classification.py:birds,smoke")
    config.data.root = str(tmp_path / "birds")
    config.data.image_size = 32
    config.batch_size = config.eval_batch_size = 8
    summary = train.train_and_evaluate(config, tmp_path / "run")
    assert summary["step"] == 6
    exp = train.build_experiment(config)
    assert exp.task.source("train").info.class_names == ("ALBATROSS", "CROW", "ZEBRA DOVE")
    assert exp.steps_per_epoch == 3  # 24 images, batch 8


def _truncate(image_file):
    image_file.write_bytes(image_file.read_bytes()[:60])  # cut off mid-pixels


@pytest.mark.slow
def test_a_corrupt_image_met_mid_run_stops_the_run_with_its_work_saved(
    tmp_path, run_files, birds_folder
):
    broken = birds_folder / "valid" / "DOVE" / "1.png"
    _truncate(broken)
    config = load_config("configs/classification.py:birds,smoke")
    config.data.root = str(birds_folder)
    config.data.image_size = 16
    config.batch_size = config.eval_batch_size = 8
    # Training reads only train/; the first evaluation (step 3) meets the broken file.
    with pytest.raises(UserError) as error:
        train.train_and_evaluate(config, tmp_path / "run")
    assert str(error.value).startswith(f"image file {broken} cannot be read (")
    assert str(error.value).endswith("; replace or remove it (a checkpoint at step 3 is kept)")
    assert run_files.steps(tmp_path / "run", "checkpoints") == [2, 3]  # 3: saved on the error


@pytest.mark.slow
def test_early_stopping_stops_after_patience_and_stays_stopped(tmp_path, smoke_config):
    # min_delta 10 makes every evaluation after the first a non-improvement.
    config = smoke_config(
        **{
            "eval_every_steps": 1,
            "early_stopping.metric": "val/accuracy",
            "early_stopping.patience": 2,
            "early_stopping.min_delta": 10.0,
        }
    )
    summary = train.train_and_evaluate(config, tmp_path)
    assert summary["stopped_early"] is True
    assert summary["step"] == 3  # evals at 1 (best), 2 and 3 (no improvement)
    assert checkpoint.RunCheckpoints(tmp_path).latest_step() == 3
    again = train.train_and_evaluate(config, tmp_path)  # restarting does not train on
    assert again["step"] == 3


def test_final_evaluation_reuses_the_final_metrics_when_the_best_is_the_final_step(
    tmp_path, monkeypatch, smoke_config
):
    """The best checkpoint at the last step is the final state: evaluated once, not twice."""
    exp = train.build_experiment(smoke_config(), workdir=tmp_path)
    state = exp.init_state_fn(jax.random.key(0)).replace(step=jnp.asarray(6, jnp.int32))
    evaluated = []
    monkeypatch.setattr(
        exp,
        "evaluate_with_artifacts",
        lambda s, splits: evaluated.append(int(s.step)) or ({"val/accuracy": 0.5}, {}),
    )

    class BestIsLast:
        def best_step(self):
            return 6

        def restore(self, *args, **kwargs):
            raise AssertionError("the final state must not be restored again")

    history = logs.History(tmp_path, resume_step=None)
    summary = train.final_evaluation(exp, state, BestIsLast(), tmp_path, history)
    assert evaluated == [6]
    assert summary["best_step"] == 6
    assert summary["metrics"]["best/val/accuracy"] == summary["metrics"]["val/accuracy"] == 0.5
