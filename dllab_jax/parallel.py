"""Data parallelism with one `jax.jit`: a 1-D mesh over every local device.

The state is replicated, the batch is split along its first axis over the `data` mesh axis,
and jit's global semantics do the rest: a mean over the batch inside a step is a mean over the
*global* batch (XLA inserts the all-reduce), so BatchNorm statistics, losses that compare
examples (InfoNCE) and metrics are the same on 1 or N devices.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dllab_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A mesh with one axis, `data`, over `devices` (default: every local device)."""
    devices = jax.local_devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "config.batch_size") -> None:
    num_devices = mesh.devices.size
    if batch_size % num_devices:
        raise UserError(
            f"{name}={batch_size} is not divisible by the {num_devices} devices; "
            f"use a multiple of {num_devices}"
        )


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Places a host batch (dict of numpy arrays) on the mesh, split along axis 0."""
    sharding = data_sharded(mesh)
    return jax.tree.map(lambda x: jax.device_put(x, sharding), batch)
