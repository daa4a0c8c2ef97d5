"""The one checkpoint module: orbax managers for a run, and loading parameters by name.

A run's workdir holds two orbax `CheckpointManager` directories:
  `<workdir>/checkpoints/` the latest `keep` states (resume restarts from the newest),
  `<workdir>/best/`        the one state with the best value of `config.checkpoint.best_metric`.
Each checkpoint has the items `params`, `model_state` (BatchNorm statistics, ...),
`opt_state`, `ema_params` (when the run keeps an EMA) and `meta`: a JSON with the step, the
metrics at that step, the model's name and constructor arguments and the run's config, which
is everything `load_run` needs to rebuild the module without the training code.

Saving is refused for a state with a non-finite parameter, so a diverged run never replaces a
good checkpoint. Writes are orbax's own atomic ones (a temporary directory renamed when
complete; leftovers of a killed save are removed when the run restarts). Restoring falls back
from a checkpoint that does not read (truncated, corrupt) to the next older one, and says so;
checkpoints newer than the one a run resumes from are moved to `<workdir>/set_aside/`, so a
resumed run never writes a step that exists.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dllab_jax.errors import UserError
from dllab_jax.run_dir import explain_os_error

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
SET_ASIDE_DIR = "set_aside"
_ARRAY_ITEMS = ("params", "model_state", "opt_state", "ema_params")


class NonFiniteStateError(UserError):
    """Raised instead of saving a state that holds NaN or inf."""


@jax.jit
def _all_finite(tree) -> jnp.ndarray:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _item_handlers() -> dict:
    """Handlers named up front, so a manager can read item metadata before any restore."""
    handlers = {item: ocp.StandardCheckpointHandler() for item in _ARRAY_ITEMS}
    handlers["meta"] = ocp.JsonCheckpointHandler()
    return handlers


def _manager(
    directory: Path, keep: int | None, read_only: bool = False, async_save: bool = False
) -> ocp.CheckpointManager:
    if read_only:
        options = ocp.CheckpointManagerOptions(read_only=True)
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
            # A save killed half-way leaves a temporary directory; the run that resumes (the
            # only writer, it holds the workdir's lock) removes it.
            cleanup_tmp_directories=True,
        )
    return ocp.CheckpointManager(
        directory.absolute(), options=options, item_handlers=_item_handlers()
    )


def _state_items(state) -> dict[str, Any]:
    """The array items of a train state; empty trees (no BatchNorm, no EMA) are not stored."""
    items = {
        "params": state.params,
        "model_state": state.model_state,
        "opt_state": state.opt_state,
        "ema_params": state.ema_params,
    }
    return {k: v for k, v in items.items() if jax.tree.leaves(v)}


class RunCheckpoints:
    """Latest-K and best-1 checkpoints of one run."""

    def __init__(self, workdir: str | Path, keep: int = 2, async_save: bool = False):
        """
        Args:
          workdir: the run's directory.
          keep: how many of the latest checkpoints to keep.
          async_save: write in a background thread. Off by default: with orbax 0.12.8 the
            background write failed ("Checkpoint directory does not exist: ...-tmp") in a run
            under `tfds.testing.mock_data`, and for models of this size a synchronous save
            costs well under a second.
        """
        self.workdir = Path(workdir)
        self.latest = _manager(self.workdir / LATEST_DIR, keep, async_save=async_save)
        self.best = _manager(self.workdir / BEST_DIR, 1, async_save=async_save)

    def _manager_of(self, which: str) -> ocp.CheckpointManager:
        if which not in ("latest", "best"):
            raise ValueError(f"which={which!r}: 'latest' or 'best'")
        return self.latest if which == "latest" else self.best

    def _save(self, manager: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
        if step in manager.all_steps():
            # Saved already at this step (a regular save followed by the one on a signal):
            # orbax refuses to write a step twice, and the state is the same.
            return
        if not bool(_all_finite(state.params)):
            last = manager.latest_step()
            kept = (
                f"the last good checkpoint (step {last}) in {manager.directory} is kept"
                if last is not None
                else "no checkpoint was saved before"
            )
            raise NonFiniteStateError(
                f"parameters are not finite at step {step}; not saved, {kept}. Lower "
                "config.optimizer.learning_rate or set config.optimizer.grad_clip_norm"
            )
        items = {k: ocp.args.StandardSave(v) for k, v in _state_items(state).items()}
        items["meta"] = ocp.args.JsonSave(dict(meta, step=int(step)))
        _check_free_space(manager, step, _state_items(state))
        try:
            manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as error:
            line = explain_os_error(error)
            if line is None:
                raise
            raise UserError(
                f"the checkpoint at step {step} could not be written to {manager.directory} "
                f"({line}); {_kept(manager, step)}; rerun the same command to resume"
            ) from None

    def save_latest(self, step: int, state, meta: dict) -> None:
        self._save(self.latest, step, state, meta)

    def save_best(self, step: int, state, meta: dict) -> None:
        """Saves the best; call it after `save_latest` at the same step, so that a best is never
        newer than the latest a resumed run starts from."""
        self.latest.wait_until_finished()
        self._save(self.best, step, state, meta)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def best_step(self) -> int | None:
        return self.best.latest_step()

    def restore(self, abstract_state, which: str = "latest"):
        """Restores a full train state against `abstract_state` (shapes, dtypes, shardings).

        Tries the newest checkpoint of that kind first and falls back to older ones when one
        does not read (its files are truncated or corrupt); each one skipped is printed.

        Returns:
          (state, meta), or None when there is no checkpoint of that kind.

        Raises:
          UserError: the checkpoints hold another model or optimiser (no fallback: every
            checkpoint of the run would), or none of them reads.
        """
        manager = self._manager_of(which)
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            return None
        targets = _state_items(abstract_state)
        unreadable: list[tuple[int, str]] = []
        for step in steps:
            problem = _mismatch(manager, step, targets)
            if problem is None:
                restored, problem = _restore_items(manager, step, targets)
                if restored is not None:
                    state = abstract_state.replace(
                        step=jnp.asarray(step, jnp.int32),
                        **{k: restored[k] for k in targets},
                    )
                    return state, restored["meta"]
            elif problem.startswith("mismatch:"):
                raise UserError(
                    f"the checkpoint in {manager.directory} (step {step}) does not fit this "
                    f"config's model or optimiser ({problem[len('mismatch: ') :]}); use another "
                    "--workdir, or the config that made it"
                )
            unreadable.append((step, problem))
            then = "trying the one before it" if step != steps[-1] else "no older one is kept"
            print(
                f"checkpoint step {step} in {manager.directory} does not restore ({problem}); "
                f"{then}",
                file=sys.stderr,
            )
        reasons = "; ".join(f"step {s}: {r}" for s, r in unreadable)
        raise UserError(
            f"no checkpoint in {manager.directory} restores ({reasons}); they are left as they "
            "are: move that folder away to start this run afresh, or use another --workdir"
        )

    def set_aside_after(self, step: int) -> list[Path]:
        """Moves every checkpoint (latest and best) with a step above `step` to
        `<workdir>/set_aside/`, so that the run resumed at `step` never meets a step that
        exists; returns where they went. They come from a future the resumed run replays
        (a best saved before its latest, a checkpoint that did not restore)."""
        from dllab_jax import distributed

        moved, changed = [], []
        for sub, manager in ((LATEST_DIR, self.latest), (BEST_DIR, self.best)):
            later = [s for s in manager.all_steps() if s > step]
            if later:
                changed.append(manager)
            if not distributed.is_primary():  # process 0 moves them; the others reload below
                continue
            for s in later:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                target = self.workdir / SET_ASIDE_DIR / f"{sub}-{s}-{stamp}"
                target.parent.mkdir(exist_ok=True)
                shutil.move(str(Path(manager.directory) / str(s)), str(target))
                moved.append(target)
                print(
                    f"set aside {sub}/{s} (newer than step {step}, where this run resumes) "
                    f"as {target}",
                    file=sys.stderr,
                )
        if distributed.process_count() > 1:  # the others may have listed before the move
            distributed.barrier("set_aside_after")
            changed = [self.latest, self.best]
        for manager in changed:
            manager.reload()
        return moved

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _kept(manager: ocp.CheckpointManager, step: int) -> str:
    older = [s for s in manager.all_steps() if s != step]
    return f"the checkpoint at step {max(older)} is kept" if older else "none was saved yet"


def _check_free_space(manager: ocp.CheckpointManager, step: int, items: dict) -> None:
    """Refuses a save the disk cannot hold, before orbax starts writing it.

    A write that fails half-way is safe (orbax never renames it into place) but noisy:
    tensorstore's threads print a traceback each. The arrays' size is an upper bound of what
    orbax writes (it compresses), plus room for its metadata.
    """
    needed = sum(int(x.nbytes) for x in jax.tree.leaves(items)) + 2**20
    free = shutil.disk_usage(manager.directory).free
    if free < needed:
        raise UserError(
            f"the checkpoint at step {step} needs up to {needed / 2**20:.1f} MiB in "
            f"{manager.directory} but {free / 2**20:.1f} MiB are free; free disk space (or use "
            f"a --workdir on another disk); {_kept(manager, step)}; rerun the same command to "
            "resume"
        )


def _shapes(tree) -> list[tuple]:
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape"))
    return sorted(tuple(int(d) for d in getattr(x, "shape", ())) for x in leaves)


def _mismatch(manager: ocp.CheckpointManager, step: int, targets: dict) -> str | None:
    """None if checkpoint `step` holds the items and array shapes of `targets`; else
    'mismatch: ...' (another model or optimiser) or why its metadata does not read."""
    try:
        metadata = manager.item_metadata(step)
    except Exception as error:
        return f"its metadata does not read: {_first_line(error)}"
    for item, target in targets.items():
        stored = metadata[item] if item in metadata.keys() else None
        if stored is None:
            return f"mismatch: it has no {item!r}"
        have, want = _shapes(stored), _shapes(target)
        if have != want:
            diff = sorted(set(have) ^ set(want))[:3]
            return (
                f"mismatch: its {item!r} holds {len(have)} arrays, this config's {len(want)}; "
                f"shapes that differ include {diff}"
            )
    return None


def _restore_items(manager: ocp.CheckpointManager, step: int, targets: dict):
    """(restored items, None), or (None, why it failed) for a checkpoint that does not read.

    tensorstore reports a failed read of one array from a coroutine whose siblings then fail
    too; Python would print each of those as 'Exception ignored in ...'. They say nothing the
    returned reason does not, so they are kept off the console while this runs.
    """
    args = {k: ocp.args.StandardRestore(v) for k, v in targets.items()}
    args["meta"] = ocp.args.JsonRestore()
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**args))
        if not isinstance(restored["meta"], dict) or "step" not in restored["meta"]:
            return None, "its meta item does not read"
        return restored, None
    except Exception as error:
        return None, _first_line(error)
    finally:
        gc.collect()
        sys.unraisablehook = previous_hook


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    # tensorstore appends its whole spec after this phrase; the part before it is the news.
    return text[0].split(" See full TensorStore details")[0][:300]


def _abstract_from_metadata(tree_metadata, sharding) -> Any:
    """ShapeDtypeStructs (placed with `sharding`) from an orbax tree's stored metadata."""

    def to_struct(meta):
        return jax.ShapeDtypeStruct(tuple(meta.shape), meta.dtype, sharding=sharding)

    return jax.tree.map(to_struct, tree_metadata, is_leaf=lambda x: hasattr(x, "shape"))


def read_variables(
    workdir: str | Path,
    which: str = "best",
    *,
    items: Sequence[str] = ("params", "model_state"),
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[dict, dict]:
    """Reads arrays of a run's checkpoint without knowing its model.

    The abstract target is built from the checkpoint's own metadata, so a checkpoint saved on
    any number of devices restores onto this process's devices (default: the first one).

    Args:
      workdir: the run's directory.
      which: "best" (falls back to "latest" for runs without a best metric) or "latest".
      items: which items to read.
      sharding: where to place the arrays.

    Returns:
      ({item: tree}, meta).
    """
    workdir = Path(workdir)
    if which not in ("best", "latest"):
        raise UserError(f"which={which!r}: use 'best' or 'latest'")
    order = (BEST_DIR, LATEST_DIR) if which == "best" else (LATEST_DIR,)
    for sub in order:
        directory = workdir / sub
        if not directory.is_dir():
            continue
        manager = _manager(directory, None, read_only=True)
        step = manager.latest_step()
        if step is None:
            continue
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        metadata = manager.item_metadata(step)
        args = {}
        for item in items:
            if item not in metadata or metadata[item] is None:
                continue
            target = _abstract_from_metadata(metadata[item], sharding)
            args[item] = ocp.args.StandardRestore(target)
        args["meta"] = ocp.args.JsonRestore()
        restored = manager.restore(step, args=ocp.args.Composite(**args))
        manager.close()
        meta = restored["meta"]
        return {k: restored[k] for k in args if k != "meta"}, meta
    raise UserError(
        f"no checkpoint in {workdir} (looked in {', '.join(order)}); train there first with "
        "`python main.py --config=... --workdir=...`"
    )


def write_json(path: str | Path, obj: Any) -> None:
    """Writes JSON atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(obj):
    if isinstance(obj, np.generic | jnp.ndarray | np.ndarray):
        return np.asarray(obj).tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")
