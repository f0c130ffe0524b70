"""The one way compile_guard starts rank processes (CLI, tests, benchmarks).

Each rank gets a torchrun-compatible environment whose rendezvous store the launcher hosts
itself on 127.0.0.1 (compile_guard.launch.supervision), its own session (so a kill reaches whatever
it forked), its own log file, and dies with the launcher (PR_SET_PDEATHSIG). The launcher
waits on the ranks' pidfds with a hard deadline — no polling sleeps — and on the first
failed rank gives the peers a short grace to log, then kills every rank's process group.
SIGINT, SIGTERM and SIGHUP end the run the same way (outcome "interrupted"). Nothing it
started outlives `launch()`: the final sweep runs on every path, exceptions included.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Mapping, Sequence

from compile_guard.launch.supervision import (
    Interrupted,
    Interruptible,
    die_with_parent,
    kill_sessions,
    loopback_store,
)
from engine.failure import FAILURE_FILE

log = logging.getLogger(__name__)

_TAIL_LINES = 40
# A rank that dies by a signal writes no record: its failure time is when the launcher saw
# it exit, which trails the death by however long the launcher waited for a core. Peers
# record their own failure only after detecting the death, so crediting signal deaths with
# this much slack keeps the culprit first on a loaded small runner without hiding a peer that
# genuinely failed earlier.
_SIGNAL_DEATH_SLACK_S = 0.25


def free_port() -> int:
    """A port the OS reports free on 127.0.0.1 now (for a torchrun rendezvous endpoint in tests; the
    launcher itself never picks one: its store binds port 0 and keeps the socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    argv: Sequence[str]  # command every rank runs, e.g. [sys.executable, "-m", "repro.x"]
    nprocs: int  # number of ranks (WORLD_SIZE)
    deadline_s: float  # hard wall-clock limit for the whole run
    log_dir: Path  # rank{r}.log files land here
    grace_s: float = 2.0  # after the first failure, time for peers to exit and log
    env: Mapping[str, str] = field(default_factory=dict)  # extra env for every rank
    rank_env: Mapping[int, Mapping[str, str]] = field(default_factory=dict)  # per-rank overrides
    cwd: Path | None = None  # working directory of the ranks
    on_line: Callable[[str], None] | None = None  # called with each line `followed_rank` prints, as printed
    followed_rank: int = 0  # whose output on_line follows live

    def __post_init__(self) -> None:
        if self.nprocs < 1:
            raise ValueError(f"nprocs={self.nprocs} is invalid; expected >= 1")
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s={self.deadline_s} is invalid; expected seconds > 0")
        if self.grace_s < 0:
            raise ValueError(f"grace_s={self.grace_s} is invalid; expected seconds >= 0")
        bad = sorted(r for r in self.rank_env if not 0 <= r < self.nprocs)
        if bad:
            raise ValueError(f"rank_env names ranks {bad}, outside 0..{self.nprocs - 1}; fix the rank ids")
        if not self.argv:
            raise ValueError("argv is empty; give the command each rank runs")
        if not 0 <= self.followed_rank < self.nprocs:
            raise ValueError(f"followed_rank={self.followed_rank} is outside 0..{self.nprocs - 1}")


@dataclass(frozen=True, kw_only=True)
class RankResult:
    rank: int
    pid: int
    returncode: int | None  # exit status; None when ended by a signal
    signal: str | None  # e.g. "SIGKILL" when ended by a signal
    killed_by_launcher: bool  # True when the launcher's kill ended it
    duration_s: float  # from spawn to exit
    log_path: Path
    log_tail: str  # last lines of its log
    failure: str | None  # the error its failure record names, if it wrote one
    failed_at_s: float | None  # when it failed (record, else exit), from launch start

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True, kw_only=True)
class LaunchResult:
    ranks: tuple[RankResult, ...]
    outcome: str  # "ok" | "rank_failed" | "deadline" | "interrupted"
    first_failed: int | None  # rank that failed first (None when ok or deadline)
    duration_s: float
    master_port: int
    started_at: float  # CLOCK_MONOTONIC at launch: rank exit times are started_at + duration_s
    interrupted_by: int | None = None  # the signal that stopped the launcher (outcome "interrupted")

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def summary(self) -> str:
        lines = [f"outcome={self.outcome} first_failed={self.first_failed} duration_s={self.duration_s:.2f}"]
        for r in self.ranks:
            how = f"rc={r.returncode}" if r.signal is None else f"signal={r.signal}"
            killed = " (killed by launcher)" if r.killed_by_launcher else ""
            lines.append(f"  rank {r.rank} pid={r.pid} {how}{killed} after {r.duration_s:.2f}s log={r.log_path}")
            if r.failure:
                lines.append(f"    failed at {r.failed_at_s:.2f}s: {r.failure.splitlines()[0][:200]}")
        return "\n".join(lines)


def _rank_env(spec: LaunchSpec, rank: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(spec.nprocs),
        LOCAL_WORLD_SIZE=str(spec.nprocs),
        GROUP_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        # Every rank is a client of the launcher's store (as of torchrun's agent store).
        TORCHELASTIC_USE_AGENT_STORE="True",
        # Peers meet on loopback only: nothing of a check listens on another interface.
        GLOO_SOCKET_IFNAME="lo",
        NCCL_SOCKET_IFNAME="lo",
        COMPILE_GUARD_RUN_DIR=str(spec.log_dir),
        PYTHONUNBUFFERED="1",
        # As torchrun does: N ranks on few cores must not oversubscribe them.
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        # No inductor worker pool: its processes would be the compile's, not the rank's.
        TORCHINDUCTOR_COMPILE_THREADS="1",
    )
    env.update(spec.env)
    env.update(spec.rank_env.get(rank, {}))
    return env


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _failure_record(log_dir: Path, rank: int) -> dict | None:
    # Written by engine.lifecycle.record_failure; data only (JSON), never code.
    try:
        return json.loads((log_dir / FAILURE_FILE.format(rank=rank)).read_text())
    except (OSError, ValueError):
        return None


class _LineTee:
    """A followed rank's output through a pipe: appended to its log and handed out line by line.

    Read only when select says the pipe is readable: no polling, and the rank never
    blocks on a full pipe for long because the launcher's loop wakes for it.
    """

    def __init__(self, log_path: Path, on_line: Callable[[str], None]) -> None:
        self.read_fd: int | None
        self.read_fd, self.write_fd = os.pipe()
        self._log = open(log_path, "ab")
        self._on_line = on_line
        self._partial = b""

    def spawned(self) -> None:
        os.close(self.write_fd)  # the child holds it now; EOF arrives when the rank is gone

    def pump(self) -> None:
        assert self.read_fd is not None
        data = os.read(self.read_fd, 1 << 16)
        if not data:
            os.close(self.read_fd)
            self.read_fd = None
            return
        self._log.write(data)
        self._log.flush()
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._on_line(line.decode(errors="replace"))

    def close(self) -> None:
        if self.read_fd is not None:
            os.set_blocking(self.read_fd, False)
            try:
                while self.read_fd is not None:
                    self.pump()  # drain what the dead rank left in the pipe
            except BlockingIOError:
                os.close(self.read_fd)
                self.read_fd = None
        self._log.close()


def _kill_groups(procs: Sequence[subprocess.Popen]) -> None:
    for proc in procs:
        # Each rank leads its own session, so its pgid is its pid; the group outlives
        # the leader while any child (a compile worker, say) is alive.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class _Run:
    """One launch: spawn, supervise until every rank exited or was killed, then collect."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self.store, self.port = loopback_store(timeout_s=spec.deadline_s)
        self.start = time.monotonic()
        self.deadline = self.start + spec.deadline_s
        self.procs: list[subprocess.Popen] = []
        self.pidfds: dict[int, int] = {}  # fd -> rank
        self.exited_at: dict[int, float] = {}
        self.killed: set[int] = set()
        self.first_exit: int | None = None  # first rank seen exiting non-zero: starts the grace
        self.kill_at: float | None = None
        self.outcome = "ok"
        self.interrupted_by: int | None = None
        self.tee: _LineTee | None = None  # the followed rank's output, when the caller follows it live

    def spawn(self) -> None:
        spec = self.spec
        for rank in range(spec.nprocs):
            log_path = spec.log_dir / f"rank{rank}.log"
            followed = rank == spec.followed_rank and spec.on_line is not None
            if followed:
                self.tee = _LineTee(log_path, spec.on_line)
            with open(log_path, "ab") as log_file:
                proc = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=self.tee.write_fd if followed else log_file,
                    stderr=subprocess.STDOUT,
                    env=_rank_env(spec, rank, self.port),
                    cwd=spec.cwd,
                    start_new_session=True,
                    preexec_fn=die_with_parent(os.getpid()),
                )
            if followed:
                self.tee.spawned()
            self.procs.append(proc)
            self.pidfds[os.pidfd_open(proc.pid)] = rank
        log.info("launched %s ranks, pids=%s, port=%s", spec.nprocs, [p.pid for p in self.procs], self.port)

    def supervise(self) -> None:
        """Wait on the pidfds (and the followed rank's pipe) until all exited, a grace ran out or the deadline."""
        spec = self.spec
        while len(self.exited_at) < spec.nprocs:
            now = time.monotonic()
            until = self.deadline if self.kill_at is None else min(self.deadline, self.kill_at)
            if now >= until:
                if now >= self.deadline and self.kill_at is None:
                    self.outcome = "deadline"
                    log.warning("deadline of %.1fs reached: killing all ranks", spec.deadline_s)
                else:
                    log.warning("grace of %.1fs after rank %s failed: killing", spec.grace_s, self.first_exit)
                self.killed.update(r for r in range(spec.nprocs) if r not in self.exited_at)
                return
            live = [fd for fd, r in self.pidfds.items() if r not in self.exited_at]
            if self.tee is not None and self.tee.read_fd is not None:
                live.append(self.tee.read_fd)
            ready, _, _ = select.select(live, [], [], until - now)
            for fd in ready:
                if self.tee is not None and fd == self.tee.read_fd:
                    self.tee.pump()
                else:
                    self._exited(self.pidfds[fd])

    def _exited(self, rank: int) -> None:
        self.procs[rank].wait()
        self.exited_at[rank] = time.monotonic()
        if self.procs[rank].returncode != 0 and self.first_exit is None:
            self.first_exit, self.outcome = rank, "rank_failed"
            self.kill_at = self.exited_at[rank] + self.spec.grace_s
            log.warning("rank %s failed first (rc=%s)", rank, self.procs[rank].returncode)

    def interrupted(self, signum: int) -> None:
        log.warning("%s: killing all ranks", signal.Signals(signum).name)
        self.outcome, self.interrupted_by = "interrupted", signum
        self.killed.update(r for r in range(len(self.procs)) if r not in self.exited_at)

    def sweep(self) -> None:
        """Kill whatever is left, reap every rank, close the fds: runs on every path."""
        _kill_groups(self.procs)
        for rank, proc in enumerate(self.procs):
            proc.wait()
            self.exited_at.setdefault(rank, time.monotonic())
        left = kill_sessions({p.pid for p in self.procs})  # a rank's children (compile workers) dead, not dying
        if left:
            log.error("processes of the ranks' sessions still alive after SIGKILL: %s", sorted(left))
        for fd in self.pidfds:
            os.close(fd)
        if self.tee is not None:
            self.tee.close()
        self.store = None  # the rendezvous store goes with the run

    def rank_result(self, rank: int) -> RankResult:
        proc, log_path = self.procs[rank], self.spec.log_dir / f"rank{rank}.log"
        rc = proc.returncode
        record = _failure_record(self.spec.log_dir, rank) if rc != 0 else None
        failed_at = None
        if record is not None:
            failed_at = record["t_monotonic"] - self.start
        elif rc != 0 and rank not in self.killed:
            failed_at = self.exited_at[rank] - self.start
        return RankResult(
            rank=rank,
            pid=proc.pid,
            returncode=rc if rc >= 0 else None,
            signal=signal.Signals(-rc).name if rc < 0 else None,
            killed_by_launcher=rank in self.killed,
            duration_s=self.exited_at[rank] - self.start,
            log_path=log_path,
            log_tail=_tail(log_path),
            failure=record["error"] if record else None,
            failed_at_s=failed_at,
        )

    def result(self) -> LaunchResult:
        results = [self.rank_result(rank) for rank in range(len(self.procs))]
        first_failed = None
        failed = [r for r in results if r.failed_at_s is not None]
        if failed:
            # The earliest failure, not the earliest exit: a peer that saw the culprit's closed
            # socket can exit before the culprit finishes tearing down.
            def order(r: RankResult) -> float:
                return r.failed_at_s - (_SIGNAL_DEATH_SLACK_S if r.signal and not r.failure else 0.0)

            first_failed = min(failed, key=order).rank
        return LaunchResult(
            ranks=tuple(results),
            outcome=self.outcome,
            first_failed=first_failed,
            duration_s=time.monotonic() - self.start,
            master_port=self.port,
            started_at=self.start,
            interrupted_by=self.interrupted_by,
        )


def launch(spec: LaunchSpec) -> LaunchResult:
    """Run `spec.argv` on `spec.nprocs` ranks; return when all have exited or were killed."""
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    for rank in range(spec.nprocs):  # a reused log dir must not feed an old run's records to this one
        (spec.log_dir / f"rank{rank}.log").write_bytes(b"")
        (spec.log_dir / FAILURE_FILE.format(rank=rank)).unlink(missing_ok=True)
    with Interruptible() as guard:
        with guard.critical():  # a signal here is held: no rank is started and then forgotten
            run = _Run(spec)
        try:
            with guard.critical():
                run.spawn()
            if guard.pending is not None:
                raise Interrupted(guard.pending)
            run.supervise()
        except Interrupted as exc:
            run.interrupted(exc.signum)
        finally:
            with guard.critical():
                run.sweep()
    return run.result()


def python_module_argv(module: ModuleType, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter. The module is passed as the object its caller
    imported (a rank program, a topology, the repro script), so every program a launch runs is an import edge
    tests/test_layers.py sees, never a name in a string."""
    return [sys.executable, "-m", module.__name__, *args]
