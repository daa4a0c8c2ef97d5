"""Data parallelism (dllab_jax/parallel.py): one and four devices take the same steps."""

import jax
import numpy as np

from dllab_jax import parallel, train
from dllab_jax.data import pipeline


def test_one_and_four_devices_give_the_same_losses(smoke_config):
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
