"""Supervision figures: leftovers after signals to the CLI, and in-place vs self-launched wall time.

    python benchmarks/bench_supervision.py [--trials 20] [--repeats 3]

1. `check --scenario tp2-aot` is signalled mid-warmup (right after the effective-backend
   handshake), `--trials` times each for SIGTERM and SIGKILL: how many rank processes are
   left afterwards (target 0), and for SIGKILL how long its ranks took to die (target < 2 s).
2. The same check self-launched (`python -m compile_guard check`) and in place under
   `torchrun --standalone --nproc-per-node=2`, alternated `--repeats` times: median wall.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from compile_guard.launch.leftovers import processes_with_env

REPO = Path(__file__).resolve().parent.parent
CHECK = ["-m", "compile_guard", "check", "--scenario", "tp2-aot"]
READY = b"handshake effective_backend"


def _wait_for(proc: subprocess.Popen, needle: bytes, timeout_s: float) -> None:
    seen, deadline = b"", time.monotonic() + timeout_s
    while needle not in seen:
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(proc.stdout.fileno(), 1 << 16) if ready else b""
        if not chunk:
            raise SystemExit(f"no {needle!r} within {timeout_s}s: {seen.decode(errors='replace')}")
        seen += chunk


def _gone_within(fds: set[int], t0: float, timeout_s: float) -> float | None:
    """Seconds from t0 until every pidfd's process exited, or None when some outlived `timeout_s`."""
    alive = set(fds)
    while alive and time.monotonic() - t0 < timeout_s:
        ready, _, _ = select.select(list(alive), [], [], timeout_s - (time.monotonic() - t0))
        alive -= set(ready)
    for fd in fds:
        os.close(fd)
    return None if alive else time.monotonic() - t0


def trial(sig: signal.Signals, log_dir: Path) -> tuple[int, float | None]:
    """(rank processes left, seconds for the ranks to go) for one signal mid-warmup."""
    proc = subprocess.Popen(
        [sys.executable, *CHECK, "--log-dir", str(log_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(proc, READY, 180)
        ranks = processes_with_env(f"COMPILE_GUARD_RUN_DIR={log_dir}") - {proc.pid}
        fds = {os.pidfd_open(pid) for pid in ranks}  # opened before the signal: a pid is never reused on us
        t0 = time.monotonic()
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        gone = _gone_within(fds, t0, 5.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    left = processes_with_env(f"COMPILE_GUARD_RUN_DIR={log_dir}")
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return len(left), gone


def wall(argv: list[str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_supervision_"))
    rows = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        results = [trial(sig, root / f"{sig.name}{i}") for i in range(args.trials)]
        times = [g for _, g in results if g is not None]
        rows.append(
            [
                sig.name,
                args.trials,
                sum(n for n, _ in results),
                sum(g is None for _, g in results),
                round(max(times) * 1e3, 1) if times else None,
            ]
        )
    print(
        tabulate(
            rows,
            headers=["signal to the CLI", "trials", "processes left", "ranks alive after 5 s", "slowest ranks-gone ms"],
        )
    )
    walls: dict[str, list[float]] = {"self-launched": [], "torchrun in place": []}
    for _ in range(args.repeats):
        walls["self-launched"].append(wall([sys.executable, *CHECK]))
        walls["torchrun in place"].append(
            wall([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *CHECK])
        )
    base = statistics.median(walls["self-launched"])
    table = [[k, round(statistics.median(v), 2), f"{statistics.median(v) / base:.2f}"] for k, v in walls.items()]
    print("\n" + tabulate(table, headers=["check --scenario tp2-aot", "median wall s", "vs self-launched"]))
    print(f"\nlogs: {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
