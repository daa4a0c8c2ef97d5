"""E5 diffusion task: the nominal conditioning of a code, the seen / unseen split from the
config, and a smoke run end to end (summary metrics, figures, falling loss, the probe cache).
The probe's accuracy on hand-made predictions is in tests/evaluators/test_concept_probe.py."""

import json

import jax
import numpy as np
import pytest

from dllab_jax import train
from dllab_jax.config_utils import load_config
from dllab_jax.data.procedural import concept_codes as concepts
from dllab_jax.evaluators import concept_probe
from dllab_jax.tasks import diffusion as diffusion_task
from dllab_jax.tasks import get_task


def test_code_concepts_are_the_nominal_values_of_the_bits():
    shape, colour, size = diffusion_task.code_concepts("110", 2)
    np.testing.assert_array_equal(shape, [[0, 1], [0, 1]])
    np.testing.assert_allclose(colour, [concepts.COLOURS[1]] * 2)
    # Size bit 0 = large: 9.5 px half side of a 28 px image, normalised by 14 px.
    np.testing.assert_allclose(size, [[9.5 / 14]] * 2, rtol=1e-6)


def test_seen_and_unseen_codes_follow_the_config():
    config = load_config("configs/diffusion.py:smoke")
    task = get_task(config)
    assert task.seen_codes == concepts.SEEN_CODES
    assert task.unseen_codes == concepts.UNSEEN_CODES
    config.unlock()
    config.evaluation.seen_codes = ("000", "111")
    config.evaluation.unseen_codes = ("001", "010")
    task = get_task(config)
    assert task.seen_codes == ("000", "111")
    assert task.unseen_codes == ("001", "010")


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("diffusion")
    summary = train.train_and_evaluate(load_config("configs/diffusion.py:smoke"), workdir)
    return workdir, summary


@pytest.mark.slow
def test_smoke_run_reports_probe_and_sampling_metrics(smoke_run):
    workdir, summary = smoke_run
    on_disk = json.loads((workdir / "summary.json").read_text())
    metrics = on_disk["metrics"]
    assert metrics == pytest.approx(summary["metrics"])
    for code in concepts.ALL_CODES:
        assert 0.0 <= metrics[f"probe/acc_{code}"] <= 1.0
    seen = np.mean([metrics[f"probe/acc_{c}"] for c in concepts.SEEN_CODES])
    unseen = np.mean([metrics[f"probe/acc_{c}"] for c in concepts.UNSEEN_CODES])
    assert metrics["probe/seen_acc"] == pytest.approx(seen)
    assert metrics["probe/unseen_acc"] == pytest.approx(unseen)
    # The probe on real images is easy; if it failed, the sample scores would mean nothing.
    assert metrics["probe/real_acc"] > 0.95
    assert metrics["sampling/seconds_per_code"] > 0
    assert metrics["sampling/compile_seconds"] > 0
    assert np.isfinite(metrics["val/loss"])
    for name in ("samples.png", "mean_images.png", "curves.png"):
        assert (workdir / name).stat().st_size > 0
    assert (workdir / "probe" / "params.msgpack").is_file()


@pytest.mark.slow
def test_smoke_run_training_loss_goes_down(smoke_run):
    workdir, _ = smoke_run
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) >= 4
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
def test_probe_is_reused_when_its_config_matches(smoke_run, monkeypatch):
    workdir, summary = smoke_run
    config = load_config("configs/diffusion.py:smoke")

    def fail(*args, **kwargs):
        raise AssertionError("the cached probe should have been reused")

    monkeypatch.setattr(concept_probe, "_train_probe", fail)
    params, metrics = concept_probe.train_or_load_probe(config, workdir / "probe")
    assert metrics["real_acc"] == pytest.approx(summary["metrics"]["probe/real_acc"])
    assert params["kernel"].shape == (28 * 28 * 3, 6)


@pytest.mark.slow
def test_guided_ddim_sampling_gives_images_for_every_code():
    # Classifier-free guidance (two network calls per step) through DDIM, from an untrained
    # model: the shapes, the range and one output per code, not the quality.
    config = load_config("configs/diffusion.py:smoke,cfg,ddim")
    assert config.model.null_concepts and config.diffusion.guidance_weight == 2.0
    exp = train.build_experiment(config)
    state = exp.init_state_fn(jax.random.key(0))
    samples, timings = exp.task.generate(exp.model, state.variables(), exp.place)
    assert sorted(samples) == sorted(concepts.ALL_CODES)
    for images in samples.values():
        assert images.shape == (4, 28, 28, 3)
        assert np.all((images >= 0) & (images <= 1))
    assert timings["seconds_per_code"] > 0
