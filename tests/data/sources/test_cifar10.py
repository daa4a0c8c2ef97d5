"""The `cifar10` source (dllab_jax/data/sources/cifar10.py) under tfds mock data and a tiny
prepared copy. CPU only, offline."""

from __future__ import annotations

import os
from unittest import mock

import ml_collections
import numpy as np
import pytest

from dllab_jax.data import get_source
from dllab_jax.errors import UserError


def cifar_config(**overrides) -> ml_collections.ConfigDict:
    values = dict(
        name="cifar10",
        data_dir=None,
        train_split="train[:40000]",
        val_split="train[40000:]",
        test_split="test",
        download=False,
    )
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_cifar10_under_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        sources = {split: get_source(cifar_config(), split) for split in ("train", "val", "test")}
    for source in sources.values():
        batch = source.get(np.arange(len(source)))
        # mock_data ignores slicing: every split has num_examples examples.
        assert len(source) == 12
        assert batch["image"].shape == (12, 32, 32, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].dtype == np.int32
        assert batch["label"].min() >= 0 and batch["label"].max() <= 9
        assert source.info.class_names[:2] == ("airplane", "automobile")
        assert source.info.num_classes == 10


def test_cifar10_not_prepared_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"not prepared in .*tfds build cifar10"):
        get_source(cifar_config(data_dir=str(tmp_path)), "train")
    with pytest.raises(UserError, match="unknown split"):
        get_source(cifar_config(data_dir=str(tmp_path)), "valid")


def _write_fake_cifar_binaries(folder, per_file: int, rng) -> dict[str, np.ndarray]:
    """The CIFAR-10 binary version's files, `per_file` random records each."""
    raw = os.path.join(folder, "cifar-10-batches-bin")
    os.makedirs(raw)
    labels = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels[name] = rng.integers(0, 10, per_file).astype(np.uint8)
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        records = np.concatenate([labels[name][:, None], pixels], axis=1)
        with open(os.path.join(raw, name + ".bin"), "wb") as f:
            f.write(records.tobytes())
    names = "airplane automobile bird cat deer dog frog horse ship truck".split()
    with open(os.path.join(raw, "batches.meta.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    return labels


def test_cifar10_prepared_keeps_the_handout_split(tmp_path):
    """A real (tiny, fake) prepared cifar10: tfds stores it shuffled, and the source still gives
    data_batch_1..4 in file order for train and data_batch_5 for val, as the handout."""
    import tensorflow_datasets as tfds

    labels = _write_fake_cifar_binaries(str(tmp_path / "raw"), 5, np.random.default_rng(0))
    data_dir = str(tmp_path / "tfds")
    # Prepare from the local files: the download manager returns them. url_infos=None skips
    # the checksum file lookup (it needs importlib_resources, which the venv may lack).
    with (
        mock.patch.object(
            tfds.download.DownloadManager,
            "download_and_extract",
            return_value=str(tmp_path / "raw"),
        ),
        mock.patch.object(tfds.core.DatasetBuilder, "url_infos", None),
    ):
        tfds.builder("cifar10", data_dir=data_dir).download_and_prepare()
    config = cifar_config(data_dir=data_dir, train_split="train[:20]", val_split="train[20:]")
    train, val, test = (get_source(config, s) for s in ("train", "val", "test"))
    train_labels = np.concatenate([labels[f"data_batch_{i}"] for i in range(1, 5)])
    np.testing.assert_array_equal(train.get(np.arange(20))["label"], train_labels)
    np.testing.assert_array_equal(val.get(np.arange(5))["label"], labels["data_batch_5"])
    np.testing.assert_array_equal(test.get(np.arange(5))["label"], labels["test_batch"])
    assert len(train) == 20 and len(val) == 5 and len(test) == 5
    assert train.info.class_names[-1] == "truck"
    # tfds's own order differs (so the sorting above is needed).
    stored = [
        ex["label"]
        for ex in tfds.as_numpy(
            tfds.builder("cifar10", data_dir=data_dir).as_dataset(split="train[:20]")
        )
    ]
    assert not np.array_equal(stored, train_labels)
