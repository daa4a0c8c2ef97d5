"""Data parallelism with one `jax.jit`: a 1-D mesh over every device of every process.

The state is replicated, the batch is split along its first axis over the `data` mesh axis,
and jit's global semantics do the rest: a mean over the batch inside a step is a mean over the
*global* batch (XLA inserts the all-reduce), so BatchNorm statistics, losses that compare
examples (InfoNCE) and metrics are the same on 1 or N devices, in 1 or N processes.

With several processes (`dllab_jax.distributed`), the mesh lists every process's devices,
process by process, so each process owns one contiguous block of rows of a global batch
(`process_rows`). Training batches are built process-local (each process reads only its rows,
`assemble_batch`); evaluation batches are read whole by every process (splits are small, and
host-side metrics such as BLEU's references need every row) and each process places its own
rows (`shard_batch`). Per-example outputs come back whole with `to_host`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dllab_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A mesh with one axis, `data`, over `devices` (default: every device of every process,
    grouped by process so that each process's rows of a batch are contiguous)."""
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def is_multi_process(mesh: Mesh) -> bool:
    """Whether `mesh` spans devices of more than one process."""
    return len({d.process_index for d in mesh.devices.flat}) > 1


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "config.batch_size") -> None:
    num_devices = mesh.devices.size
    if batch_size % num_devices:
        raise UserError(
            f"{name}={batch_size} is not divisible by the {num_devices} devices; "
            f"use a multiple of {num_devices}"
        )


def process_rows(mesh: Mesh, global_size: int) -> slice:
    """The rows [start, stop) of a global batch of `global_size` that this process's devices
    hold; the whole batch in a single-process mesh."""
    if not is_multi_process(mesh):
        return slice(0, global_size)
    indices = data_sharded(mesh).addressable_devices_indices_map((global_size,))
    bounds = sorted(
        (s[0].start or 0, global_size if s[0].stop is None else s[0].stop) for s in indices.values()
    )
    start, stop = bounds[0][0], bounds[-1][1]
    if sum(b - a for a, b in bounds) != stop - start:
        raise ValueError(f"this process's rows of the batch are not contiguous: {bounds}")
    return slice(start, stop)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Places a host batch (dict of numpy arrays, the *global* batch) on the mesh, split along
    axis 0; with several processes each one places only its own rows."""
    global_size = len(jax.tree.leaves(batch)[0])
    rows = process_rows(mesh, global_size)  # every row when alone
    if rows != slice(0, global_size):
        batch = jax.tree.map(lambda x: np.asarray(x)[rows], batch)
    return assemble_batch(batch, mesh, global_size)


def assemble_batch(local_batch: dict, mesh: Mesh, global_size: int) -> dict:
    """The global batch of `global_size` rows from each process's own rows (`process_rows`);
    the same as `shard_batch` in a single process."""
    sharding = data_sharded(mesh)
    if not is_multi_process(mesh):
        return jax.tree.map(lambda x: jax.device_put(x, sharding), local_batch)

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (global_size, *x.shape[1:]))

    return jax.tree.map(place, local_batch)


def to_host(tree):
    """Numpy copies of arrays that may be split over other processes' devices (per-example
    outputs); replicated and single-process arrays are fetched as `jax.device_get` does."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(fetch, tree)
