"""A disk cache for procedurally generated splits: made once per machine, not once per run.

Rendering a procedural split takes seconds (the classification default's 24k images: 8-10 s
on 2 cores), and every run, evaluation and test made them again. `cached_arrays` keeps a
generator's output in `<cache>/<name>-<key>.npz`, where the key hashes the function, its
arguments and the source of every module in `dllab_jax/data/` and its subpackages: any
change to the generators makes new files, never a stale hit. Writes are atomic (temporary
file + rename), a file that does not read is made again, and a cache that cannot be written
(full disk, read-only) only costs the regeneration.

The folder is `$DLLAB_DATA_CACHE` (`0` turns the cache off), default
`$XDG_CACHE_HOME/dllab_jax/data` (`~/.cache/dllab_jax/data`); delete it at any time.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

_DATA_PACKAGE = Path(__file__).resolve().parent
# Object arrays of strings (captions) are stored as fixed-width unicode under this prefix.
_STR_PREFIX = "__str__"


def cache_dir() -> Path | None:
    """The cache folder, or None when `DLLAB_DATA_CACHE=0`."""
    value = os.environ.get("DLLAB_DATA_CACHE")
    if value == "0":
        return None
    if value:
        return Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dllab_jax" / "data"


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(_DATA_PACKAGE.rglob("*.py")):
        name = path.relative_to(_DATA_PACKAGE).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _key(fn: Callable, args: tuple, kwargs: dict) -> str:
    text = f"{fn.__module__}.{fn.__qualname__}|{args!r}|{sorted(kwargs.items())!r}"
    return hashlib.sha256((text + _code_version()).encode()).hexdigest()[:24]


def _read(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {}
            for name in stored.files:
                if name.startswith(_STR_PREFIX):
                    arrays[name[len(_STR_PREFIX) :]] = stored[name].astype(object)
                else:
                    arrays[name] = stored[name]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None  # missing, truncated or foreign: make it again
    return arrays


def _storable(arrays: dict) -> dict[str, np.ndarray] | None:
    out = {}
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            return None
        if array.dtype == object:
            if not all(isinstance(x, str) for x in array.flat):
                return None
            out[_STR_PREFIX + name] = array.astype(str)
        else:
            out[name] = array
    return out


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as file:
            np.savez(file, **arrays)
        os.replace(tmp, path)
    except OSError:  # full or read-only: the run goes on with what it generated
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def cached_arrays(fn: Callable[..., dict[str, np.ndarray]]):
    """Decorator: `fn(*args)` -> dict of numpy arrays, read from or written to the cache.

    `fn` must be deterministic in its (hashable) arguments. Returned arrays are read-only,
    as the generators' own are.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        folder = cache_dir()
        path = folder / f"{fn.__name__}-{_key(fn, args, kwargs)}.npz" if folder else None
        arrays = _read(path) if path is not None and path.is_file() else None
        if arrays is None:
            arrays = fn(*args, **kwargs)
            storable = _storable(arrays) if path is not None else None
            if storable is not None:
                _write(path, storable)
        for array in arrays.values():
            if isinstance(array, np.ndarray):
                array.setflags(write=False)
        return arrays

    return wrapper


def cached_split(fn: Callable[..., dict[str, np.ndarray]]):
    """Decorator of a procedural split generator: `cached_arrays` on disk, and the last 8
    splits in memory for the process (`fn.cache_clear()` empties that, `fn.__wrapped__`
    bypasses it)."""
    return functools.lru_cache(maxsize=8)(cached_arrays(fn))
