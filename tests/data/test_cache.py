"""The disk cache of procedural splits: a hit equals a fresh generation, a broken file is made
again, a cache that cannot be written costs nothing but time, and code changes miss."""

from __future__ import annotations

import numpy as np
import pytest

from dllab_jax.data import cache

calls = []


@cache.cached_arrays
def make(seed: int, n: int) -> dict[str, np.ndarray]:
    calls.append((seed, n))
    rng = np.random.default_rng(seed)
    captions = np.empty((n, 2), object)
    captions[:] = [[f"a {i}", f"b {i}"] for i in range(n)]
    return {"image": rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), "captions": captions}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_DATA_CACHE", str(tmp_path / "cache"))
    calls.clear()
    return tmp_path / "cache"


def test_second_call_reads_what_the_first_wrote(folder):
    first = make(1, 5)
    second = make(1, 5)
    assert calls == [(1, 5)]  # generated once
    np.testing.assert_array_equal(first["image"], second["image"])
    assert second["captions"].dtype == object and second["captions"][3, 1] == "b 3"
    assert not second["image"].flags.writeable
    make(2, 5)  # other arguments: another file
    assert calls == [(1, 5), (2, 5)] and len(list(folder.glob("make-*.npz"))) == 2


def test_a_truncated_file_is_made_again(folder):
    expected = make(1, 5)["image"]
    (path,) = folder.glob("make-*.npz")
    path.write_bytes(path.read_bytes()[:100])
    np.testing.assert_array_equal(make(1, 5)["image"], expected)
    assert len(calls) == 2 and cache._read(path) is not None  # rewritten whole


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DLLAB_DATA_CACHE", str(blocker / "cache"))
    calls.clear()
    assert make(1, 3)["image"].shape == (3, 4, 4, 3)
    assert make(1, 3)["image"].shape == (3, 4, 4, 3)
    assert len(calls) == 2


def test_changed_generator_code_misses_and_zero_turns_it_off(folder, monkeypatch):
    make(1, 5)
    monkeypatch.setattr(cache, "_code_version", lambda: "another version of dllab_jax/data")
    make(1, 5)
    assert len(calls) == 2
    monkeypatch.setenv("DLLAB_DATA_CACHE", "0")
    assert cache.cache_dir() is None
    make(1, 5)
    assert len(calls) == 3
