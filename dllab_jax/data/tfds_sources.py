"""Sources read from TensorFlow Datasets (prepared locally; nothing is downloaded by default).

`load_tfds_arrays` is the shared loader: it finds the builder, fails with a `UserError`
that says how to prepare the data when it is missing, and reads one split into numpy arrays.
A new tfds source (oxford_iiit_pet, cityscapes, voc) is a `@register`ed `make` that calls it
with its own per-example `example_fn` (to resize images and masks of varying shape).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from dllab_jax.data.base import ArraySource, SourceInfo
from dllab_jax.data.registry import register
from dllab_jax.errors import UserError

CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

ExampleFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

# The handout's split: data_batch_1..4 for training, data_batch_5 for validation. tfds stores
# cifar10 shuffled, so these slices are taken after sorting by `id` (the position in the
# original files; see `_read_in_file_order`).
CIFAR10_SPLITS = {"train": "train[:40000]", "val": "train[40000:]", "test": "test"}


def _hide_gpus_from_tensorflow(tf: Any) -> None:
    """TensorFlow grabs all GPU memory when it sees a GPU; it only reads data here."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        # Raised once TensorFlow has initialised its devices: whoever initialised it first
        # (main.py hides the GPUs at start-up) has already decided.
        pass


def _import_tfds() -> Any:
    """tensorflow_datasets, with TensorFlow kept off the GPU; they are the `[tfds]` extra."""
    try:
        import tensorflow as tf

        _hide_gpus_from_tensorflow(tf)
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise UserError(
            f"this data source reads a tfds data set, which needs TensorFlow and "
            f"tensorflow-datasets ({error}); install them with `pip install -e '.[tfds]'`, or "
            "use an offline preset"
        ) from None
    return tfds


def tfds_builder(name: str, data_dir: str | None, download: bool) -> Any:
    """The tfds builder of `name`, prepared first when `download` is set.

    Args:
      name: a tfds name, optionally with config and version ('cifar10', 'voc/2012').
      data_dir: the tfds data folder; None for tfds's default (TFDS_DATA_DIR or
        ~/tensorflow_datasets).
      download: download and prepare the data set if it is not prepared yet.

    Raises:
      UserError: `name` is not a tfds data set, or downloading failed.
    """
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as e:
        raise UserError(f"tfds has no data set {name!r} ({e}); check config.data.name") from None
    if download:
        try:
            builder.download_and_prepare()
        except Exception as e:
            raise UserError(
                f"could not download and prepare tfds data set {name!r} into "
                f"{builder.data_dir}: {type(e).__name__}: {e}"
            ) from e
    return builder


def _read_split(
    builder: Any,
    split: str,
    keys: Sequence[str],
    example_fn: ExampleFn | None,
    batch_size: int,
    passthrough: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Reads `split` of a builder in tfds's stored order.

    `example_fn` sees the `keys` of one example; `passthrough` keys are added to its output
    unchanged.
    """
    tfds = _import_tfds()
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError:
        # tfds signals "not prepared" with an AssertionError from as_dataset. Checking
        # `builder.is_prepared()` instead would also reject tfds.testing.mock_data.
        name = builder.name
        raise UserError(
            f"tfds data set {name!r} is not prepared in {builder.data_dir_root}; on a machine "
            f"with internet run `tfds build {name} --data_dir={builder.data_dir_root}` (and "
            "copy the folder here), or set config.data.download=True"
        ) from None
    except ValueError as e:
        raise UserError(f"bad tfds split {split!r} for {builder.name!r}: {e}") from None
    read_keys = list(dict.fromkeys([*keys, *passthrough]))
    ds = ds.map(lambda ex: {k: ex[k] for k in read_keys})
    if example_fn is None:
        parts = list(tfds.as_numpy(ds.batch(batch_size)))
        return {k: np.concatenate([p[k] for p in parts]) for k in read_keys} if parts else {}
    examples = [
        {**example_fn({k: ex[k] for k in keys}), **{k: ex[k] for k in passthrough}}
        for ex in tfds.as_numpy(ds)
    ]
    return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]} if examples else {}


def _read_in_file_order(
    builder: Any,
    split: str,
    keys: Sequence[str],
    order_key: str,
    example_fn: ExampleFn | None,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Reads `split` with its slices taken in the order of `order_key`, not tfds's order.

    tfds shuffles examples by a hash of their key when it prepares a data set, so
    'train[:40000]' is a hash-ordered subset. Builders that store the original position in a
    feature (cifar10's `id` = 'train_00042') let us restore the published order: read each
    base split whole, sort by that feature, then apply the split string's slices.
    """
    tfds = _import_tfds()
    try:
        instruction = tfds.core.ReadInstruction.from_spec(split)
    except ValueError as e:
        raise UserError(f"bad tfds split {split!r} for {builder.name!r}: {e}") from None
    base_names = list(dict.fromkeys(part.split("[")[0].strip() for part in split.split("+")))
    full = {}
    for base in base_names:
        arrays = _read_split(builder, base, keys, example_fn, batch_size, passthrough=[order_key])
        if arrays:
            order = np.argsort(arrays[order_key], kind="stable")
            arrays = {k: v[order] for k, v in arrays.items() if k != order_key or k in keys}
        full[base] = arrays
    # `to_absolute` only reads the sizes of the splits it slices.
    sizes = {
        base: types.SimpleNamespace(num_examples=n, shard_lengths=[n])
        for base, arrays in full.items()
        for n in [len(next(iter(arrays.values()))) if arrays else 0]
    }
    try:
        pieces = instruction.to_absolute(sizes)
    except ValueError as e:
        raise UserError(f"bad tfds split {split!r} for {builder.name!r}: {e}") from None
    parts = [
        {k: v[p.from_ : p.to] for k, v in full[p.splitname].items()}
        for p in pieces
        if full[p.splitname]
    ]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_tfds_arrays(
    name: str,
    split: str,
    *,
    data_dir: str | None,
    download: bool,
    keys: Sequence[str],
    example_fn: ExampleFn | None = None,
    order_key: str | None = None,
    batch_size: int = 1024,
) -> tuple[dict[str, np.ndarray], Any]:
    """Reads one tfds split into memory as numpy arrays.

    Args:
      name: the tfds name ('cifar10').
      split: a tfds split string: slices and unions allowed ('train[:40000]', 'train+test').
      data_dir: the tfds data folder, None for tfds's default.
      download: download and prepare the data first if needed.
      keys: the features to return, e.g. ('image', 'label').
      example_fn: maps one example (dict of numpy arrays with `keys`) to the arrays to stack;
        needed when examples differ in shape (resize them here). Without it, examples are
        read in batches of `batch_size`, which needs fixed shapes but is much faster.
      order_key: a feature that sorts examples into their published order (cifar10: 'id');
        slices of `split` then refer to that order instead of tfds's shuffled one. Applies to
        prepared data sets (not under `tfds.testing.mock_data`).
      batch_size: examples per read when `example_fn` is None.

    Returns:
      arrays: {key: [n, ...] array}.
      info: the builder's `tfds.core.DatasetInfo`.

    Raises:
      UserError: the data set is not prepared in `data_dir` and `download` is False, the split
        string is bad, or it selects no examples.
    """
    builder = tfds_builder(name, data_dir, download)
    if order_key is not None and builder.is_prepared():
        arrays = _read_in_file_order(builder, split, keys, order_key, example_fn, batch_size)
    else:
        # Unprepared: as_dataset raises the "not prepared" UserError, or, under
        # tfds.testing.mock_data, returns mock examples for any split string (the mock ignores
        # slices, so the config's real slices need not fit the mock's size).
        arrays = _read_split(builder, split, keys, example_fn, batch_size)
    if not arrays or not len(next(iter(arrays.values()))):
        raise UserError(f"tfds split {split!r} of {name!r} is empty; check the split string")
    return arrays, builder.info


def class_names_from_info(
    info: Any, key: str = "label", fallback: Sequence[str] = ()
) -> tuple[str, ...]:
    """Class names of a ClassLabel feature; `fallback` when tfds only knows placeholders.

    Some builders (cifar10) learn their names while preparing the data, so unprepared or mocked
    builders report '0', '1', ...; the real names are then the `fallback`.
    """
    feature = info.features[key]
    names = tuple(feature.names)
    if fallback and names == tuple(str(i) for i in range(feature.num_classes)):
        return tuple(fallback)
    return names


def _split_string(data_config: ml_collections.ConfigDict, split: str, defaults: Mapping) -> str:
    if split not in defaults:
        raise UserError(
            f"unknown split {split!r} for data source {data_config.get('name', '?')!r}; "
            f"use one of {tuple(defaults)}"
        )
    return data_config.get(f"{split}_split", defaults[split])


@register("cifar10")
def make_cifar10(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """CIFAR-10 from tfds, held in memory: `image` [n, 32, 32, 3] uint8, `label` [n] int32.

    Reads `data_config.data_dir` (None: tfds default), `train_split` / `val_split` /
    `test_split` (tfds split strings; defaults 'train[:40000]', 'train[40000:]', 'test') and
    `download` (default False).
    """
    tfds_split = _split_string(data_config, split, CIFAR10_SPLITS)
    arrays, info = load_tfds_arrays(
        "cifar10",
        tfds_split,
        data_dir=data_config.get("data_dir", None),
        download=bool(data_config.get("download", False)),
        keys=("image", "label"),
        order_key="id",
    )
    images = arrays["image"].astype(np.uint8)
    labels = arrays["label"].astype(np.int32)
    class_names = class_names_from_info(info, fallback=CIFAR10_CLASS_NAMES)
    source_info = SourceInfo(
        num_classes=len(class_names), class_names=class_names, image_shape=images.shape[1:]
    )
    return ArraySource({"image": images, "label": labels}, source_info)
