"""A run's directory, claimed by one process: a lock, a clean refusal, one line for OS errors.

`claim(workdir)` is the one way a command (train, eval, benchmark) takes a workdir:

  * **One process per workdir.** An exclusive `fcntl.flock` on `<workdir>/.lock` (a lock the
    kernel drops when its process dies, however it dies, so there is never a stale lock to
    clear by hand). A second process stops at once with a line naming the one that runs.
  * **A refused start writes nothing.** Until the caller marks the start done
    (`RunDirectory.started()`), an error removes what the start created: the whole workdir if
    it did not exist, else the top-level entries that were not there before. Files that were
    there (a finished run's `summary.json`, its checkpoints) are never touched.
  * **OS errors as one line.** A read-only directory, a full disk or a lost permission raised
    anywhere inside the claim becomes a `UserError` naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dllab_jax.errors import UserError

LOCK_FILE = ".lock"

# errno -> what the user can do about it.
_OS_ERROR_ADVICE = {
    errno.ENOSPC: "free disk space (or use a --workdir on another disk)",
    errno.EDQUOT: "free space within your disk quota (or use a --workdir on another disk)",
    errno.EROFS: "use a --workdir on a writable file system",
    errno.EACCES: "use a --workdir you may write to",
    errno.EPERM: "use a --workdir you may write to",
}


def explain_os_error(error: BaseException) -> str | None:
    """One line for an OS error a user can fix (disk full, read-only, permission), else None.

    Also recognises such errors wrapped by other libraries (tensorstore, via orbax, reports
    them as text), by their strerror in the message.
    """
    if isinstance(error, OSError) and error.errno in _OS_ERROR_ADVICE:
        where = f" {error.filename}" if error.filename else ""
        return f"cannot write{where}: {os.strerror(error.errno)}; {_OS_ERROR_ADVICE[error.errno]}"
    text = str(error)
    for code, advice in _OS_ERROR_ADVICE.items():
        if os.strerror(code) in text:
            return f"cannot write: {os.strerror(code)}; {advice}"
    return None


def _describe_holder(lock_path: Path) -> str:
    try:
        holder = lock_path.read_text().strip()
    except OSError:
        holder = ""
    return holder or "another process"


class RunDirectory:
    """A claimed workdir (see the module docstring); made by `claim`."""

    def __init__(self, path: Path, created: Path | None, entries_before: set[str]):
        self.path = path
        self._created = created  # the top-most directory the claim made, if any
        self._entries_before = entries_before
        self._started = False

    def started(self) -> None:
        """Marks the start-up done: from now on an error leaves the directory as it is."""
        self._started = True

    def _undo_start(self) -> None:
        if self._started:
            return
        if self._created is not None:
            shutil.rmtree(self._created, ignore_errors=True)
            return
        for entry in os.listdir(self.path):
            if entry in self._entries_before or entry == LOCK_FILE:
                continue
            target = self.path / entry
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@contextlib.contextmanager
def claim(workdir: str | Path, *, what: str = "run") -> Iterator[RunDirectory]:
    """Takes `workdir` for this process for the duration of the `with` block.

    Args:
      workdir: the run directory; created if missing (and removed again if the start fails).
      what: the command, for the lock's description ('train', 'eval', 'benchmark').

    Raises:
      UserError: the workdir is in use by another process, is not a directory, or cannot be
        written; and any OS error of the kinds `explain_os_error` knows, raised inside.
    """
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise UserError(f"--workdir {path} is a file, not a directory; choose another --workdir")
    created = None
    try:
        if not path.exists():
            absolute = path.absolute()
            base = _nearest_existing(absolute)
            if not os.access(base, os.W_OK):
                read_only = os.statvfs(base).f_flag & os.ST_RDONLY
                code = errno.EROFS if read_only else errno.EACCES
                raise OSError(code, os.strerror(code), str(base))
            try:
                path.mkdir(parents=True)
                created = base / absolute.relative_to(base).parts[0]
            except FileExistsError:  # another process made it just now; the lock decides
                pass
        entries_before = set(os.listdir(path))
        lock_path = path / LOCK_FILE
        # No O_TRUNC: the holder's description must survive until we hold the lock.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        line = explain_os_error(error)
        if line is None:
            raise
        raise UserError(f"workdir {path}: {line}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"workdir {path} is in use by {_describe_holder(lock_path)}; wait for it to "
                "finish (or stop it), or choose another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        description = f"pid {os.getpid()} on {socket.gethostname()} ({what}: {command}, {started})"
        os.write(fd, (description + "\n").encode())
        run_dir = RunDirectory(path, created, entries_before)
        try:
            yield run_dir
        except BaseException as error:
            run_dir._undo_start()
            line = None if isinstance(error, UserError) else explain_os_error(error)
            if line is None:
                raise
            raise UserError(line) from None
    finally:
        os.close(fd)  # releases the lock


class FollowingDirectory(RunDirectory):
    """The workdir as a process other than 0 of a multi-process run sees it: process 0 holds
    the lock and writes; this one reads (checkpoints through orbax, which all processes
    write together) and never removes anything."""

    def __init__(self, path: Path):
        super().__init__(path, None, set())

    def _undo_start(self) -> None:
        pass


@contextlib.contextmanager
def claim_for_all_processes(workdir: str | Path, *, what: str = "run") -> Iterator[RunDirectory]:
    """`claim` by process 0 of a multi-process run, the others following its outcome (every
    process must call it); `claim` itself when the process is alone.

    Raises:
      UserError: process 0 could not take the workdir (on process 0: why; on the others: a
        line that says so).
    """
    from dllab_jax import distributed

    if distributed.process_count() == 1:
        with claim(workdir, what=what) as run:
            yield run
        return
    if not distributed.is_primary():
        if not distributed.all_agree(True):
            raise UserError(
                f"process 0 could not take the workdir {workdir} (its output says why); this "
                "process stops too"
            )
        yield FollowingDirectory(Path(workdir))
        return
    with contextlib.ExitStack() as stack:
        try:
            run = stack.enter_context(claim(workdir, what=what))
        except BaseException:
            distributed.all_agree(False)
            raise
        distributed.all_agree(True)
        yield run
