"""Batches from sources: resumable shuffled training batches and padded evaluation batches."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np

from dllab_jax.data.augment import BatchRows
from dllab_jax.data.base import Source
from dllab_jax.errors import UserError

Augment = Callable[..., dict]  # (batch, rng[, rows=BatchRows]) -> batch (data/augment.py)

# Streams of randomness derived from the data seed; distinct so that changing the
# augmentation never changes the order of examples.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Training drops the last partial batch, as torch's `drop_last=True`."""
    if num_examples < batch_size:
        raise UserError(
            f"the training split has {num_examples} examples, fewer than one batch of "
            f"{batch_size}; lower config.batch_size or use more training data"
        )
    return num_examples // batch_size


def train_batches(
    source: Source,
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    augment: Augment | None = None,
    rows: slice | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields training batches forever, starting at `start_step`.

    Batch `s` is a pure function of (seed, s): epoch `e = s // steps_per_epoch` uses the
    permutation drawn from `(seed, e)`, and augmentation of batch `s` draws from `(seed, s)`.
    So a run resumed at step `s` sees exactly the batches an uninterrupted run would.

    `rows` (a process of a multi-process run, `parallel.process_rows`) yields only those rows
    of each global batch of `batch_size`, read from the source alone, and exactly as they are
    in the whole batch: an augmentation marked `augment.takes_rows` draws for the whole batch
    and keeps these rows; one without the mark gets the whole batch, then it is cut.
    """
    if rows is not None and (rows.start, rows.stop) == (0, batch_size):
        rows = None
    cut_after = (
        rows is not None and augment is not None and not getattr(augment, "takes_rows", False)
    )
    num_examples = len(source)
    per_epoch = steps_per_epoch(num_examples, batch_size)
    step = start_step
    epoch, permutation = -1, None
    while True:
        this_epoch, position = divmod(step, per_epoch)
        if this_epoch != epoch:
            epoch = this_epoch
            permutation = np.random.default_rng([seed, _SHUFFLE_STREAM, epoch]).permutation(
                num_examples
            )
        indices = permutation[position * batch_size : (position + 1) * batch_size]
        if rows is not None and not cut_after:
            indices = indices[rows]
        batch = source.get(indices)
        if augment is not None:
            rng = np.random.default_rng([seed, _AUGMENT_STREAM, step])
            if rows is None or cut_after:
                batch = augment(batch, rng)
            else:
                batch = augment(batch, rng, rows=BatchRows(rows.start, rows.stop, batch_size))
        if cut_after:
            batch = {k: v[rows] for k, v in batch.items()}
        yield batch
        step += 1


def eval_batches(
    source: Source, batch_size: int, *, limit: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Yields the first `limit` examples (default all) in order, in full batches.

    The last batch is padded with copies of its first example and `batch_mask` (float32
    [batch_size], 1 = real example) marks what counts, so one compiled step serves every
    batch and metrics summed with the mask are exact for any split size.
    """
    num_examples = len(source) if limit is None else min(limit, len(source))
    for start in range(0, num_examples, batch_size):
        indices = np.arange(start, min(start + batch_size, num_examples))
        num_real = len(indices)
        indices = np.concatenate([indices, np.full(batch_size - num_real, indices[0])])
        batch = source.get(indices)
        mask = np.zeros(batch_size, np.float32)
        mask[:num_real] = 1.0
        batch["batch_mask"] = mask
        yield batch


def num_eval_batches(source: Source, batch_size: int, limit: int | None = None) -> int:
    num_examples = len(source) if limit is None else min(limit, len(source))
    return -(-num_examples // batch_size)


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Runs `iterator` in a background thread, `size` items ahead.

    Host-side batch assembly (file reads, augmentation) then overlaps with the device step.
    An exception in the producer is re-raised in the consumer.
    """
    items: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in iterator:
                if stop.is_set():
                    return
                items.put(item)
        except BaseException as error:  # re-raised in the consumer thread
            items.put(error)
        items.put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Unblock the producer if it waits on a full queue.
        while not items.empty():
            items.get_nowait()
