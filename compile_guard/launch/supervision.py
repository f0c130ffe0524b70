"""What keeps the launcher's promises: nothing outlives it, nothing listens beyond loopback.

- `loopback_store()`: the rendezvous TCPStore, hosted by the launcher itself on a socket it
  bound to 127.0.0.1 (no pick-a-free-port race, nothing on another interface); every rank
  connects to it as a client (TORCHELASTIC_USE_AGENT_STORE, as under torchrun's agent).
- `die_with_parent(pid)`: a preexec hook; the rank gets SIGKILL the moment its launcher dies,
  even when the launcher itself is SIGKILLed (PR_SET_PDEATHSIG survives exec).
- `kill_sessions(ids)`: SIGKILL every process of the ranks' sessions (a rank's compile workers
  included) and wait, with a deadline, until none is alive: a SIGKILLed process can stay
  runnable for a moment (in the kernel, paging), and "nothing outlives it" means dead on return.
- `Interruptible`: SIGINT, SIGTERM and SIGHUP become an `Interrupted` exception in the
  launcher's loop — except inside critical sections (spawning, the final sweep), where the
  signal is held until the section ends, so no rank is ever started and then forgotten.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
from typing import Any, Callable

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # resolved before any fork: the child only calls it
INTERRUPTING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def loopback_store(timeout_s: float) -> tuple[Any, int]:
    """(the store, its port): a TCPStore server listening on 127.0.0.1 only."""
    from compile_guard import compat  # the launching parent needs torch here, and only here

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    return compat.listening_store(sock, timeout_s), port


def sessions_alive(session_ids: set[int]) -> set[int]:
    """pids of the live (not zombie) processes whose session is one of `session_ids`, read from /proc."""
    from pathlib import Path

    alive = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) in session_ids:
            alive.add(int(stat.parent.name))
    return alive


def kill_sessions(session_ids: set[int], *, deadline_s: float = 5.0) -> set[int]:
    """SIGKILL every process of these sessions and wait on their pidfds until each is dead or `deadline_s`
    passed (a process that forked meanwhile is found by the next pass); what is left alive."""
    import select
    import time

    end = time.monotonic() + deadline_s
    while True:
        left = sessions_alive(session_ids)
        if not left or time.monotonic() >= end:
            return left
        fds = []
        for pid in left:
            try:
                fds.append(os.pidfd_open(pid))
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
        try:
            for fd in fds:  # a pidfd turns readable when its process has exited
                select.select([fd], [], [], max(0.0, end - time.monotonic()))
        finally:
            for fd in fds:
                os.close(fd)


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL this child when `parent_pid` dies (and at once if it already has)."""

    def preexec() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


class Interrupted(BaseException):
    """The launcher was told to stop (SIGINT / SIGTERM / SIGHUP); `signum` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class Interruptible:
    """`with Interruptible() as guard:` — signals raise Interrupted, except under `guard.critical()`."""

    def __init__(self) -> None:
        self.pending: int | None = None  # a signal held during a critical section
        self._depth = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interruptible:
        if threading.current_thread() is threading.main_thread():  # handlers only install there
            self._previous = {s: signal.signal(s, self._handle) for s in INTERRUPTING}
        return self

    def __exit__(self, *_exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self._depth:
            self.pending = self.pending or signum
            return
        self.pending = signum
        raise Interrupted(signum)

    def critical(self) -> _Critical:
        return _Critical(self)


class _Critical:
    def __init__(self, guard: Interruptible) -> None:
        self.guard = guard

    def __enter__(self) -> None:
        self.guard._depth += 1

    def __exit__(self, *_exc: Any) -> None:
        self.guard._depth -= 1
