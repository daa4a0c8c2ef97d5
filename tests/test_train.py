"""The generic loop end to end on the E1 smoke preset (4 simulated CPU devices)."""

import json
import math
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dllab_jax import benchmark, checkpoint, logs, parallel, train
from dllab_jax.config_utils import REPO_ROOT, load_config
from dllab_jax.data import pipeline
from dllab_jax.errors import UserError

SMOKE = "configs/classification.py:smoke"


def smoke_config(**overrides):
    config = load_config(SMOKE)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One uninterrupted smoke run, shared by the tests that only read its results."""
    workdir = tmp_path_factory.mktemp("run")
    summary = train.train_and_evaluate(smoke_config(), workdir)
    return workdir, summary


def test_smoke_run_writes_summary_checkpoints_logs_and_figures(finished_run):
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


def test_summary_val_metrics_equal_the_last_evaluation_during_training(finished_run):
    workdir, summary = finished_run
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in history if "val/accuracy" in r][-1]
    assert summary["metrics"]["val/loss"] == pytest.approx(last_eval["val/loss"], rel=1e-6)


def test_loss_goes_down_on_a_fixed_seed(tmp_path):
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


def test_one_and_four_devices_give_the_same_losses():
    devices = jax.devices()
    assert len(devices) == 4, "tests/conftest.py should simulate 4 CPU devices"
    losses = {}
    for n in (1, 4):
        exp = train.build_experiment(smoke_config(), mesh=parallel.make_mesh(devices[:n]))
        state = exp.init_state_fn(jax.random.key(0))
        batches = pipeline.train_batches(exp.task.source("train"), 16, seed=0)
        losses[n] = []
        for _ in range(3):
            state, metrics = exp.jitted_train_step(state, exp.place(next(batches)))
            losses[n].append(float(metrics["loss"]))
    np.testing.assert_allclose(losses[1], losses[4], rtol=2e-5)
    assert losses[1][0] != losses[1][2]  # the steps did update the model


def test_interrupted_run_resumes_and_ends_with_the_same_numbers(tmp_path, finished_run):
    _, uninterrupted = finished_run
    workdir = tmp_path / "run"
    assert train.train_and_evaluate(smoke_config(), workdir, stop_at_step=5) == {}
    assert checkpoint.RunCheckpoints(workdir).latest_step() == 4
    resumed = train.train_and_evaluate(smoke_config(), workdir)
    assert resumed["step"] == 6
    for key, value in uninterrupted["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train.train_and_evaluate(smoke_config(num_train_steps=4), tmp_path)
    good = checkpoint.read_variables(tmp_path, "latest")[0]["params"]
    # From step 5 on the loss is NaN (a NaN learning rate is refused as bad input).
    task_class = type(train.get_task(smoke_config()))
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


def test_a_non_finite_state_is_never_saved(tmp_path):
    exp = train.build_experiment(smoke_config())
    state = exp.init_state_fn(jax.random.key(0))
    ckpts = checkpoint.RunCheckpoints(tmp_path)
    ckpts.save_latest(1, state, {})
    broken = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
    with pytest.raises(checkpoint.NonFiniteStateError):
        ckpts.save_latest(2, broken, {})
    ckpts.wait()
    assert ckpts.latest_step() == 1


def test_restoring_a_checkpoint_of_another_architecture_is_a_clear_error(finished_run):
    workdir, _ = finished_run
    other = smoke_config(**{"model.widths": (8, 8, 8)})
    with pytest.raises(UserError, match="does not fit this config"):
        train.evaluate_checkpoint(other, workdir)


def test_init_from_loads_by_name_and_rejects_shape_mismatches(finished_run, tmp_path):
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


def test_readme_snippet_loads_a_run_in_plain_flax(tmp_path, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    snippet = re.search(r"<!-- load-run-snippet -->\s*```python\n(.*?)```", readme, re.S)
    assert snippet, "README.md lost its load_run snippet"
    monkeypatch.chdir(tmp_path)
    config = smoke_config()
    summary = train.train_and_evaluate(config, tmp_path / "checkpoints" / "classification")
    namespace = {}
    exec(snippet.group(1), namespace)  # the README's lines, verbatim
    logits = np.asarray(namespace["logits"])
    assert logits.shape == (1, 10)
    # The loaded model reproduces the run's best-checkpoint accuracy on the val split.
    model, variables = namespace["model"], namespace["variables"]
    from dllab_jax.data import get_source
    from dllab_jax.tasks.classification import normalize_images

    val = get_source(config.data, "val").get(np.arange(config.data.num_val))
    images = normalize_images(val["image"], config.data.mean, config.data.std)
    accuracy = float((model.apply(variables, images).argmax(-1) == val["label"]).mean())
    assert accuracy == pytest.approx(summary["metrics"]["best/val/accuracy"], abs=1e-6)


def test_eval_mode_reproduces_the_summary(finished_run):
    workdir, summary = finished_run
    out = train.evaluate_checkpoint(smoke_config(), workdir)
    assert json.loads((workdir / "eval.json").read_text())["step"] == summary["best_step"]
    for key, value in out["metrics"].items():
        assert value == pytest.approx(summary["metrics"][f"best/{key}"], rel=1e-6)


def test_benchmark_mode_writes_timings_and_flops(tmp_path):
    config = smoke_config(**{"benchmark.steps": 3, "benchmark.warmup_steps": 1})
    result = benchmark.run_benchmark(config, tmp_path)
    on_disk = json.loads((tmp_path / "benchmark.json").read_text())
    assert on_disk["timed_steps"] == 3
    assert on_disk["step_s_median"] > 0 and on_disk["compile_s"] > 0
    assert on_disk["num_devices"] == 4
    # 16 images of 32x32 through a CNN: well over a MFLOP, far under a TFLOP per step.
    assert 1e6 < result["flops_per_step_per_device"] < 1e12


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


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(UserError, match="unknown preset"):
        load_config("configs/classification.py:resnet19")


def _main(*args, cwd):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "main.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_unknown_config_key_and_missing_data_folder_are_one_line_errors(tmp_path):
    unknown = _main(f"--config={REPO_ROOT}/{SMOKE}", "--config.optimizer.lr=0.1", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "Traceback" not in unknown.stderr
    assert (
        unknown.stderr.strip()
        .splitlines()[-1]
        .startswith("error: unknown config key 'optimizer.lr'")
    )
    missing = _main(
        f"--config={REPO_ROOT}/configs/classification.py:birds,smoke",
        f"--config.data.root={tmp_path / 'no_such_folder'}",
        f"--workdir={tmp_path / 'w'}",
        cwd=tmp_path,
    )
    assert missing.returncode == 2, missing.stderr[-2000:]
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no_such_folder" in last


def test_cifar10_preset_trains_under_tfds_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    config = load_config("configs/classification.py:cifar10,smoke")
    assert (config.data.train_split, config.data.val_split) == ("train[:40000]", "train[40000:]")
    with tfds.testing.mock_data(num_examples=32):
        summary = train.train_and_evaluate(config, tmp_path)
    assert summary["step"] == 6
    assert 0.0 <= summary["metrics"]["test/accuracy"] <= 1.0


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


def test_early_stopping_stops_after_patience_and_stays_stopped(tmp_path):
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


_WITHOUT_TENSORFLOW = """
import runpy, sys
# A module set to None in sys.modules cannot be imported: as on a machine without them.
for name in ("tensorflow", "tensorflow_datasets", "clu"):
    sys.modules[name] = None
workdir, bench = sys.argv[1], sys.argv[2]
sys.argv = ["main.py", "--config=configs/classification.py:smoke", "--workdir=" + workdir]
try:
    runpy.run_path("main.py", run_name="__main__")
except SystemExit as stop:
    assert not stop.code, stop.code
from dllab_jax import benchmark
from dllab_jax.config_utils import load_config
config = load_config("configs/classification.py:smoke")
config.unlock()
config.benchmark.steps, config.benchmark.warmup_steps = 2, 1
benchmark.run_benchmark(config, bench)
"""


def test_core_trains_logs_and_benchmarks_without_tensorflow(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, str(tmp_path / "run"), str(tmp_path / "b")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 6 and 0.0 <= summary["metrics"]["val/accuracy"] <= 1.0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/accuracy")] == [3, 6]
    assert json.loads((tmp_path / "b" / "benchmark.json").read_text())["timed_steps"] == 2


def test_tfds_sources_without_tensorflow_name_the_extra(monkeypatch):
    from dllab_jax.data import tfds_sources

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(UserError, match=r"pip install -e '\.\[tfds\]'"):
        tfds_sources._import_tfds()


def test_final_evaluation_reuses_the_final_metrics_when_the_best_is_the_final_step(
    tmp_path, monkeypatch
):
    """The best checkpoint at the last step is the final state: evaluated once, not twice."""
    exp = train.build_experiment(smoke_config(), workdir=tmp_path)
    state = exp.init_state_fn(jax.random.key(0)).replace(step=jnp.asarray(6, jnp.int32))
    evaluated = []
    monkeypatch.setattr(
        exp, "evaluate", lambda s, splits: evaluated.append(int(s.step)) or {"val/accuracy": 0.5}
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
