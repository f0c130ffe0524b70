"""Nothing outlives the CLI: SIGINT, SIGTERM and SIGHUP end a check with its ranks killed and a
partial report; SIGKILL of the CLI takes its ranks down within 2 s (PR_SET_PDEATHSIG).

Topology: `python -m compile_guard check --scenario tp2-aot` (TP=2, gloo, CPU, aot_eager),
signalled once its ranks passed the handshakes, i.e. in warmup.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compile_guard.launch.leftovers import processes_with_env
from tests.conftest import REPO

WAIT_S = 120.0  # for the handshakes to pass (an import of torch per rank on a busy box)


def _start_check(log_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "compile_guard", "check", "--scenario", "tp2-aot", "--log-dir", str(log_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _read_until(proc: subprocess.Popen, needle: bytes, timeout_s: float) -> bytes:
    """stdout so far, once `needle` was printed; fails the test at the timeout."""
    seen, deadline = b"", time.monotonic() + timeout_s
    while needle not in seen:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
        if not ready:
            proc.kill()
            pytest.fail(f"no {needle!r} within {timeout_s}s: {seen.decode(errors='replace')}")
        chunk = os.read(proc.stdout.fileno(), 1 << 16)
        if not chunk:
            pytest.fail(f"the CLI ended before {needle!r}: {seen.decode(errors='replace')}")
        seen += chunk
    return seen


def _ranks_of(log_dir: Path) -> set[int]:
    return processes_with_env(f"COMPILE_GUARD_RUN_DIR={log_dir}")


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.smoke), signal.SIGHUP], ids=lambda s: s.name
)
def test_a_signal_kills_the_ranks_and_reports_interrupted(tmp_path, sig, processes):
    proc = _start_check(tmp_path)
    try:
        seen = _read_until(proc, b"handshake effective_backend", WAIT_S)
        assert len(_ranks_of(tmp_path)) >= 2  # the ranks are alive, mid-warmup
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = (seen + out).decode(errors="replace")
    assert proc.returncode == 128 + sig, text  # 130 SIGINT, 143 SIGTERM, 129 SIGHUP
    assert f"interrupted by {sig.name}" in text and "handshakes passed: env, compile, effective_backend" in text, text
    assert _ranks_of(tmp_path) == set()


def test_sigkill_of_the_cli_takes_its_ranks_down_within_2s(tmp_path, processes):
    proc = _start_check(tmp_path)
    try:
        _read_until(proc, b"handshake effective_backend", WAIT_S)
        ranks = _ranks_of(tmp_path) - {proc.pid}
        assert len(ranks) >= 2
        fds = [os.pidfd_open(pid) for pid in ranks]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline, alive = time.monotonic() + 2.0, set(fds)
        while alive and time.monotonic() < deadline:
            ready, _, _ = select.select(list(alive), [], [], deadline - time.monotonic())
            alive -= set(ready)
        for fd in fds:
            os.close(fd)
    finally:
        left = _ranks_of(tmp_path)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert not alive, f"{len(alive)} rank(s) outlived the CLI by more than 2 s"
    assert left == set()


def _listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket the given processes hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address = fields[1].split(":")[0]
                found.append((inodes[fields[9]], _ip(address, width)))
    return found


def _ip(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return ":".join(b"".join(words).hex()[i : i + 4] for i in range(0, 32, 4))


def test_a_check_listens_on_loopback_only(tmp_path, processes):
    """The store (hosted by the CLI) and every gloo pair (ranks) listen on 127.0.0.1 / ::1 only."""
    proc = _start_check(tmp_path)
    try:
        _read_until(proc, b"handshake effective_backend", WAIT_S)  # the store is up, gloo pairs connected
        sockets = _listening(_ranks_of(tmp_path) | {proc.pid})
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    loopback = {"127.0.0.1", "0000:0000:0000:0000:0000:0000:0000:0001"}
    assert any(pid == proc.pid for pid, _ in sockets), sockets  # the CLI hosts the rendezvous store
    assert [s for s in sockets if s[1] not in loopback and not s[1].startswith("127.")] == [], sockets
