"""Reading TensorFlow Datasets (prepared locally; nothing is downloaded by default).

`load_tfds_arrays` is the shared loader: it finds the builder, fails with a `UserError`
that says how to prepare the data when it is missing, and reads one split into numpy arrays.
A tfds source (`sources/cifar10.py`, `oxford_iiit_pet.py`, `cityscapes.py`) is a registered
`make` that calls it, with its own per-example `example_fn` where examples differ in shape
(`dense_example_fn` resizes the images and label maps of segmentation sets). TensorFlow is
imported only when a split is read.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from dllab_jax.data.base import ArraySource, SourceInfo
from dllab_jax.data.checks import check_split
from dllab_jax.data.readers.images import resize_image, resize_nearest
from dllab_jax.errors import UserError

ExampleFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


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


def load_configured(
    data_config: ml_collections.ConfigDict,
    name: str,
    split: str,
    defaults: Mapping[str, str],
    **kwargs,
) -> tuple[dict[str, np.ndarray], Any]:
    """`load_tfds_arrays` of the tfds set `name` for the source of the same name: the split
    string from `tfds_split`, `config.data.data_dir` (None: tfds default) and
    `config.data.download` (False); `kwargs` as `load_tfds_arrays` takes them."""
    return load_tfds_arrays(
        name,
        tfds_split(data_config, name, split, defaults),
        data_dir=data_config.get("data_dir", None),
        download=bool(data_config.get("download", False)),
        **kwargs,
    )


def tfds_split(
    data_config: ml_collections.ConfigDict, name: str, split: str, defaults: Mapping[str, str]
) -> str:
    """The tfds split string of `split`: `config.data.<split>_split`, default `defaults[split]`."""
    check_split(name, split, tuple(defaults))
    return data_config.get(f"{split}_split", defaults[split])


def dense_example_fn(
    image_key: str,
    label_key: str,
    image_size: tuple[int, int],
    resample: str,
    to_labels: Callable[[np.ndarray], np.ndarray],
) -> ExampleFn:
    """Per-example function for `load_tfds_arrays` of a segmentation set.

    Resizes `ex[image_key]` to `image_size` with `resample` ('nearest' or 'bilinear') and the
    label map `ex[label_key]` ([h, w] or [h, w, 1]) with nearest, then maps its values to
    labels with `to_labels`.
    """

    def fn(ex: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        label = np.asarray(ex[label_key])
        if label.ndim == 3:
            label = label[..., 0]
        return {
            "image": resize_image(np.asarray(ex[image_key], np.uint8), image_size, resample),
            "label": to_labels(resize_nearest(label, image_size)),
        }

    return fn


def dense_source(
    arrays: Mapping[str, np.ndarray], class_names: Sequence[str], image_size: tuple[int, int]
) -> ArraySource:
    """A segmentation split read by `dense_example_fn`, held in memory."""
    info = SourceInfo(
        num_classes=len(class_names), class_names=tuple(class_names), image_shape=(*image_size, 3)
    )
    return ArraySource(
        {"image": arrays["image"].astype(np.uint8), "label": arrays["label"].astype(np.int32)},
        info,
    )
