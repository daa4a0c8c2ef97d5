"""Multi-process runs on JAX's own distributed runtime (one controller per process).

`initialize` starts `jax.distributed` when this process is one of several: with explicit
flags (`--coordinator_address`, `--num_processes`, `--process_id`), or under a launcher that
JAX detects by itself (SLURM's `srun` with more than one task, Open MPI's `mpirun`). A
single process (no flags, no launcher) is left exactly as before. After it, `jax.devices()`
lists every process's devices; `parallel.make_mesh` builds the global data mesh from them.

Roles: every process computes (the steps are collectives), reads its own rows of each batch
and takes part in orbax's checkpoint writes; process 0 alone writes everything else (logs,
metrics.jsonl, figures, summary.json, the workdir lock). `is_primary`, `barrier`,
`primary_first` and `all_agree` are the few coordination points the loop needs.

A process that dies mid-run (killed, out of memory, a lost host) would leave the others
blocked in a collective until JAX's heartbeat timeout aborts them with a C++ stack trace.
`PeerWatch` (started by `initialize`) keeps one TCP connection between process 0 and each
other process; a connection that closes without this project's goodbye, or stays silent for
`SILENCE_TIMEOUT_S`, makes the survivor print one line and exit with `EXIT_PEER_LOST` within
seconds. The checkpoints already written stay: rerun the same command on every process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from dllab_jax.errors import UserError

T = TypeVar("T")

# sysexits' EX_TEMPFAIL: the run stopped through no fault of this process; rerun to resume.
EXIT_PEER_LOST = 75
PING_EVERY_S = 2.0
SILENCE_TIMEOUT_S = 60.0  # no ping for this long: the peer's host is gone or hangs
_GOODBYE = b"bye\n"
_PING = b".\n"


def detected_launcher() -> str | None:
    """The multi-process launcher this process runs under, as JAX's cluster detection sees
    it ('slurm', 'openmpi'), when it started more than one process; None otherwise."""
    env = os.environ
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and int(env["SLURM_NTASKS"]) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "openmpi"
    return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Joins the distributed runtime when this is one of several processes; True if it did.

    Call before anything touches a JAX backend.

    Args:
      coordinator_address: 'host:port' of process 0's coordinator; with it, `num_processes`
        and `process_id` are required. None: use a detected launcher, or run alone.
      num_processes: how many processes the run has.
      process_id: this process's index, 0 .. num_processes - 1.

    Raises:
      UserError: incomplete or inconsistent flags.
    """

    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit):
        if None in explicit:
            raise UserError(
                "--coordinator_address, --num_processes and --process_id go together; give "
                "all three (on Kubernetes, --process_id=$JOB_COMPLETION_INDEX)"
            )
        if ":" not in coordinator_address:
            raise UserError(
                f"--coordinator_address={coordinator_address!r} must be host:port, e.g. "
                "127.0.0.1:1234 or the first node's name and a free port"
            )
        if not 0 <= process_id < num_processes:
            raise UserError(
                f"--process_id={process_id} must be in 0 .. {num_processes - 1} "
                f"(--num_processes={num_processes})"
            )
        if num_processes == 1:
            return False
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif detected_launcher() is not None:
        jax.distributed.initialize()
    else:
        return False
    host = coordinator_address.rsplit(":", 1)[0] if coordinator_address else None
    PeerWatch.start(host)
    return True


def process_count() -> int:

    return jax.process_count()


def jax_process_index() -> int:

    return jax.process_index()


def is_primary() -> bool:
    """Process 0, the one that writes logs, figures and summaries (True when alone)."""

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier of this name (no-op when alone)."""
    if process_count() > 1:
        multihost_utils.sync_global_devices(name)


def primary_first(name: str, fn: Callable[[], T]) -> T:
    """Runs `fn` on process 0, then on the others: for work that makes a file the others then
    read (a tokenizer a task trains once per run, say)."""
    if process_count() == 1:
        return fn()
    if is_primary():
        result = fn()
        barrier(name)
        return result
    barrier(name)
    return fn()


def all_agree(ok: bool) -> bool:
    """True when `ok` holds on every process (a collective: every process must call it)."""
    if process_count() == 1:
        return bool(ok)

    flags = multihost_utils.process_allgather(np.asarray(bool(ok), np.int32))
    return bool(np.all(np.asarray(flags)))


def any_process(flag: bool) -> bool:
    """True when `flag` holds on at least one process (a collective)."""
    return not all_agree(not flag)


def finished() -> None:
    """Ends this process's part of a multi-process run normally; `main.py` calls it when the
    command is done (no-op when alone).

    It tells the other processes that this one's connection closing is no loss, then leaves
    the runtime in an order that cannot fail: every process's client leaves together (the
    runtime's shutdown barrier), and process 0, which hosts the coordination service, keeps
    it until the others have exited. (Left to `jax.distributed.shutdown` at exit, process 0
    could stop the service while another process still polled it for errors, and that one
    aborted with a C++ stack trace after a successful run.)
    """
    if not PeerWatch.started:
        return
    PeerWatch.say_goodbye()
    from jax._src import distributed as jax_distributed  # the runtime's state: no public API

    state = jax_distributed.global_state
    if getattr(state, "service", None) is None or not hasattr(state, "client"):
        jax_distributed.shutdown()  # a process other than 0 (its client leaves), or a jax
        return  # whose runtime state looks otherwise: its own order
    if getattr(state, "preemption_sync_manager", None) is not None:
        state.preemption_sync_manager.shutdown()
        state.preemption_sync_manager = None
    if state.client is not None:
        state.client.shutdown()
        state.client = None
    PeerWatch.wait_for_peers_to_exit(timeout_s=SILENCE_TIMEOUT_S)
    state.service.shutdown()
    state.service = None


class PeerWatch:
    """The liveness connections between process 0 and the others (see the module docstring)."""

    _connections: ClassVar[list[socket.socket]] = []
    _closed: ClassVar[list[threading.Event]] = []  # set when a peer's connection ends
    started = False
    _leaving = False
    _lock = threading.Lock()

    @classmethod
    def start(cls, host: str | None) -> None:

        index, count = jax.process_index(), jax.process_count()
        listener = None
        if index == 0:
            listener = socket.create_server(("", 0))
            listener.listen(count)
            port = listener.getsockname()[1]
            address = f"{host or socket.gethostname()}:{port}"
        else:
            address = ""
        # Process 0's address reaches the others through the runtime JAX already set up.
        encoded = np.zeros(256, np.uint8)
        encoded[: len(address)] = np.frombuffer(address.encode(), np.uint8)
        encoded = np.asarray(multihost_utils.broadcast_one_to_all(encoded))
        address = bytes(encoded[encoded > 0]).decode()
        if index == 0:
            for _ in range(count - 1):
                connection, _ = listener.accept()
                peer = int(connection.recv(16).split(b"\n")[0])
                cls._watch(connection, f"process {peer}")
            listener.close()
        else:
            host_name, port = address.rsplit(":", 1)
            connection = socket.create_connection((host_name, int(port)), timeout=60)
            connection.sendall(f"{index}\n".encode())
            cls._watch(connection, "process 0")
        atexit.register(cls._close)
        cls.started = True

    @classmethod
    def _watch(cls, connection: socket.socket, peer: str) -> None:
        connection.settimeout(SILENCE_TIMEOUT_S)
        cls._connections.append(connection)
        closed = threading.Event()
        cls._closed.append(closed)

        def read():
            try:
                watch()
            finally:
                closed.set()

        def watch():
            buffer = b""
            while True:
                try:
                    data = connection.recv(64)
                except TimeoutError:
                    cls._lost(peer, f"silent for {SILENCE_TIMEOUT_S:.0f} s")
                    return
                except OSError as error:
                    if cls._leaving:
                        return
                    cls._lost(peer, f"its connection failed: {error}")
                    return
                if not data:
                    if _GOODBYE.strip() in buffer or cls._leaving:
                        return  # it finished normally
                    cls._lost(peer, "it exited or was killed")
                    return
                buffer = (buffer + data)[-16:]

        def ping():
            while not cls._leaving:
                try:
                    with cls._lock:
                        connection.sendall(_PING)
                except OSError:
                    return
                time.sleep(PING_EVERY_S)

        threading.Thread(target=read, daemon=True, name=f"peer-watch-{peer}").start()
        threading.Thread(target=ping, daemon=True, name=f"peer-ping-{peer}").start()

    @classmethod
    def _lost(cls, peer: str, why: str) -> None:
        if cls._leaving:
            return

        me = f"process {jax.process_index()} of {jax.process_count()}"
        print(
            f"error: {me}: lost {peer} ({why}); stopping this process too. The checkpoints "
            "written so far are kept: rerun the same command on every process to resume",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_PEER_LOST)

    @classmethod
    def wait_for_peers_to_exit(cls, timeout_s: float) -> None:
        """Waits until every peer's connection has ended (they exited), at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        for closed in cls._closed:
            closed.wait(max(0.0, deadline - time.monotonic()))

    @classmethod
    def say_goodbye(cls) -> None:
        with cls._lock:
            cls._leaving = True
            for connection in cls._connections:
                with contextlib.suppress(OSError):
                    connection.sendall(_GOODBYE)

    @classmethod
    def _close(cls) -> None:
        cls._leaving = True
        for connection in cls._connections:
            with contextlib.suppress(OSError):
                connection.close()
