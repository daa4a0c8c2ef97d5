"""E2 colourisation task: the grey input against PIL's, a config trained for a few steps
(falling loss, rising PSNR, the figure) and the loss check."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dllab_jax import train
from dllab_jax.errors import UserError
from dllab_jax.tasks.colorization import grey_inputs


def test_grey_inputs_are_pil_luma():
    rgb = np.random.default_rng(2).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    pil_luma = np.asarray(Image.fromarray(rgb[0]).convert("L"), np.float32) / 255.0
    ours = (np.asarray(grey_inputs(jnp.asarray(rgb)))[0, ..., 0] + 1.0) / 2.0
    np.testing.assert_allclose(ours, pil_luma, atol=1.0 / 255)  # PIL rounds to uint8


@pytest.mark.slow
def test_colorization_run_learns_and_draws(tmp_path, override, run_files):
    config = override(
        "configs/colorization.py:smoke",
        num_train_steps=16,
        eval_every_steps=8,
        log_every_steps=4,
        **{"data.num_train": 64, "optimizer.learning_rate": 3e-3},
    )
    summary = train.train_and_evaluate(config, tmp_path)
    losses = [r["train/loss"] for r in run_files.history(tmp_path) if "train/loss" in r]
    assert losses[-1] < 0.7 * losses[0], losses
    # Training-mode PSNR (after 16 steps BatchNorm's running averages still lag in eval).
    psnrs = [r["train/psnr"] for r in run_files.history(tmp_path) if "train/psnr" in r]
    assert psnrs[-1] > psnrs[0] + 2.0, psnrs  # dB
    m = summary["metrics"]
    assert m["val/l1"] == pytest.approx(m["val/loss"])  # the default loss is L1
    assert (tmp_path / "colorization_val.png").stat().st_size > 5000


def test_colorization_rejects_an_unknown_loss(override):
    with pytest.raises(UserError, match=r"config\.loss"):
        train.build_experiment(override("configs/colorization.py:smoke", loss="l3"))


# --------------------------------------------------------- SegFormer fine-tuning strategies
