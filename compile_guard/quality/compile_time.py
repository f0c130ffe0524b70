"""Compile time: each frame compile of the run (dynamo + backend), wall and CPU, and a calibration measured in
the same run to divide it by.

A compile time in seconds moves with the machine (a loaded runner, another CPU); its ratio to a fixed piece of CPU
work timed in the same process moves much less (benchmarks/bench_quality.py measures both). The state is part of the
figure: "warm" (inductor's FX-graph cache served every graph), "cold" (an empty cache directory of the rank's own:
`--compile-time cold`), "miss" (it served no graph from a shared cache, whose kernels may still have been cached:
not comparable), "mixed" (not comparable), or "uncached" (a backend without that cache: aot_eager, eager);
`--compile-time cold` adds "rewarm", the same program compiled again in that process from the cache its cold compile
filled. A baseline keeps one entry per state, and only like is compared with like.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import tempfile
import time
from typing import Any, Iterator

from compile_guard import compat
from compile_guard.quality.options import COLD, MISS, MIXED, REWARM, UNCACHED, WARM

CACHE_DIR_VARIABLES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")  # inductor's caches, and triton's (CUDA)
# The calibration: fixed pure-Python work of the kind a compile does (parsing and compiling source, building and
# sorting tables), ~40 ms here. It moves with the machine (its speed, its load) and never with torch, so an
# upgrade that slows every compile shows in the ratio (a reference *compile* would slow down with it).
_FUNCTIONS = 300
_CALIBRATION_SOURCE = "\n".join(
    f"def f{i}(x):\n    y = [x + {i}, x * {i % 7}, str(x)]\n    return (len(y[2]), y[0] ^ y[1])"
    for i in range(_FUNCTIONS)
)
CALIBRATION_REPEATS = 2  # calibration runs right before and right after each frame compile (the clock's hooks,
# outside the compile's own CPU count). This machine kind's CPU speed per thread wanders by up to x1.8 (a
# neighbour on the host's sibling hardware thread: the calibration alone read 55-106 ms in one minute) and stays
# for seconds, so the runs that bracket a compile see the speed it ran at: the unit is their mean, and their spread
# says how far the machine wandered meanwhile. Both are reported beside the CPU seconds the judge reads
# (quality.rules.compile_growth says why the ratio is not judged). A clock that saw no compile calibrates when
# asked.
_LIMIT = 10_000


_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _descendants_cpu_s(pid: int) -> float:
    """CPU seconds of the live descendants of `pid` (inductor's compile workers, with compile_threads > 1, live
    on between compiles, so RUSAGE_CHILDREN never counts them), from /proc; 0 where /proc cannot say."""
    total, seen, stack = 0.0, set(), [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
            children = {int(c) for t in tasks for c in open(f"/proc/{parent}/task/{t}/children").read().split()}
        except (OSError, ValueError):
            continue
        for child in children - seen:
            seen.add(child)
            try:
                fields = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()
                total += sum(int(fields[i]) for i in (11, 12, 13, 14)) * _TICK_S  # utime stime cutime cstime
            except (OSError, ValueError, IndexError):
                continue
            stack.append(child)
    return total


def _kids_s() -> float:
    """CPU seconds of this process's children that ended (g++) and of its live descendants (compile workers)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime + _descendants_cpu_s(os.getpid())


def _cpu_s() -> tuple[float, float]:
    """(CPU seconds of this process and every descendant, of the children that ended: g++ runs, a build). Under a
    CPU hog a compile's wall time stretches, its CPU time does not (benchmarks/bench_quality.py). The compile
    workers (live descendants) start with the first compile of a process, warm or cold, so they are not a sign
    that something was built."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + _kids_s(), ended.ru_utime + ended.ru_stime


@contextlib.contextmanager
def empty_cache_dir() -> Iterator[str]:
    """Inside: inductor (and triton) cache into an empty directory of their own, removed after. Inductor reads
    the variable at each use (torch._inductor.runtime.cache_dir_utils.cache_dir), so this holds mid-process."""
    saved = {name: os.environ.get(name) for name in CACHE_DIR_VARIABLES}
    path = tempfile.mkdtemp(prefix="compile_guard_cold_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    os.environ["TRITON_CACHE_DIR"] = os.path.join(path, "triton")
    try:
        yield path
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(path, ignore_errors=True)


def is_empty(path: str) -> bool:
    """Whether the directory holds no file (it may not exist, or hold only empty directories)."""
    for _root, _dirs, files in os.walk(path):
        if files:
            return False
    return True


def merge_into(source: str, target: str) -> int:
    """Copy every file of `source` that `target` lacks into it, each through a temp name and a rename (a
    concurrent reader sees a whole file or none; two ranks copying the same entry both write whole ones).
    Inductor's lock files are left out. Returns the files copied."""
    copied = 0
    for root, _dirs, files in os.walk(source):
        rel = os.path.relpath(root, source)
        for name in files:
            dst = os.path.join(target, rel, name)
            if name.endswith(".lock") or os.path.exists(dst):
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            tmp = f"{dst}.compile_guard-{os.getpid()}.tmp"
            shutil.copy2(os.path.join(root, name), tmp)
            os.replace(tmp, dst)
            copied += 1
    return copied


@contextlib.contextmanager
def cold_if_empty(real: str) -> Iterator[bool]:
    """Upgrade day without a flag: when inductor's cache directory `real` is empty as this rank starts (a CI
    cache keyed by the torch version, a fresh runner), the rank compiles in an empty directory of its own, as
    `--compile-time cold` does: a cold compile, judged against the baseline's cold entry, that no peer's kernels
    shortened. After, what it compiled is merged into `real`, which fills as a plain run would have filled it.
    Yields whether it was empty. Every rank looks before its first handshake, so before any rank compiles."""
    if not is_empty(real):
        yield False
        return
    with empty_cache_dir() as private:
        try:
            yield True
        finally:
            merge_into(private, real)


class CompileClock:
    """Attach before the run's first compile; `frames()` after: every frame compile since, timed. `cold`: the run
    compiles in an empty cache directory of its own (`--compile-time cold`, or an empty cache at start)."""

    def __init__(self, *, cold: bool = False) -> None:
        self.cold = cold
        self.runs: list[tuple[float, float]] = []  # calibration runs bracketing each compile
        self._since = compat.compile_records(0, limit=_LIMIT)[1]
        self._cpu: list[float] = []
        self._kids: list[float] = []  # of which children that ended (g++): work a warm cache skips
        self._started: tuple[float, float] | None = None
        self._remove = compat.on_compiles(self._start, self._end)

    def _start(self, _args: Any = None) -> None:
        self.runs += calibration_runs(CALIBRATION_REPEATS)  # the machine's speed as the compile starts
        self._started = _cpu_s()

    def _end(self, _args: Any = None) -> None:
        if self._started is not None:
            (cpu, kids), (cpu0, kids0) = _cpu_s(), self._started
            self._cpu.append(cpu - cpu0)
            self._kids.append(kids - kids0)
            self._started = None
            self.runs += calibration_runs(CALIBRATION_REPEATS)  # ... and as it ends

    def stop(self) -> list[dict[str, Any]]:
        """The frame compiles seen (compile id, frame, wall seconds, cache); `cpu` their CPU seconds, in order."""
        self._remove()
        frames = []
        for record in compat.compile_records(self._since, limit=_LIMIT)[0]:
            hits, misses = record["fx_hits"], record["fx_misses"]
            cache = (
                None
                if hits is None or misses is None
                else "hit"
                if hits and not misses
                else "miss"
                if misses and not hits
                else "none"
                if not hits and not misses
                else "both"
            )
            frames.append(
                {"name": f"{record['compile_id']} {record['co_name']}", "wall_s": record["frame_s"], "cache": cache}
            )
        self.cpu = list(self._cpu)
        self.built = list(self._kids)
        return frames

    def calibration(self) -> dict[str, Any]:
        """The unit of this clock's compiles: the calibration runs that bracketed them (runs now if none did)."""
        return calibration(self.runs or calibration_runs(2 * CALIBRATION_REPEATS))


def state_of(frames: list[dict[str, Any]], backend: str, *, empty_cache: bool = False) -> str:
    """The run's cache state. Every FX-graph lookup missed: COLD in an empty cache directory of the rank's own
    (--compile-time cold, or a cache empty at start); in a populated one MISS, since its kernels may still have
    come from the cache (g++ skipped: 2.7 s where a cold compile took 9.7 s, docs.examples.quality_block here),
    so it is reported and never judged."""
    if backend != "inductor":
        return UNCACHED
    caches = {f["cache"] for f in frames if f["cache"] != "none"}  # a frame that made no graph looks up nothing
    if caches == {"miss"}:
        return COLD if empty_cache else MISS
    return WARM if caches == {"hit"} else MIXED


def _calibration_once() -> tuple[float, float]:
    started, cpu = time.perf_counter(), time.thread_time()
    namespace: dict[str, Any] = {}
    exec(compile(_CALIBRATION_SOURCE, "<compile_guard calibration>", "exec"), namespace)  # our own constant text
    table = {f"k{i}": namespace[f"f{i % _FUNCTIONS}"](i) for i in range(20_000)}
    sorted(table.items(), key=lambda kv: (kv[1], kv[0]))
    return time.perf_counter() - started, time.thread_time() - cpu


_WARMED: list[bool] = []  # whether this process ran the calibration once untimed


def calibration_runs(n: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of `n` calibration runs; the process's first is preceded by one untimed (a first run
    builds caches of the interpreter's own)."""
    if not _WARMED:
        _calibration_once()
        _WARMED.append(True)
    return [_calibration_once() for _ in range(n)]


def calibration(runs: list[tuple[float, float]]) -> dict[str, Any]:
    """The calibration's wall and CPU seconds (means over `runs`: the machine's average speed over the moments
    they were taken at), and `spread`: the sd of the runs' log CPU seconds, how much the machine's speed
    wandered (0 with fewer than 2 runs)."""
    logs = [math.log(c) for _, c in runs if c > 0]
    mean = sum(logs) / len(logs) if logs else 0.0
    spread = math.sqrt(sum((v - mean) ** 2 for v in logs) / (len(logs) - 1)) if len(logs) > 1 else 0.0
    return {
        "wall_s": sum(w for w, _ in runs) / len(runs),
        "cpu_s": sum(c for _, c in runs) / len(runs),
        "spread": spread,
        "runs": len(runs),
    }


def summary(
    frames: list[dict[str, Any]],
    *,
    state: str,
    cpu: list[float],
    calibration: dict[str, float],
    built: list[float] | None = None,
) -> dict[str, Any]:
    """The state's figures (`built`: each compile's g++ CPU seconds, left out of a warm figure). Judged: CPU
    seconds of the compiles over the calibration's (both stay put under a CPU hog, and move together with the
    CPU); beside it wall seconds per frame compile and in total, and the wall ratio. Per graph CPU where every
    frame compile was timed by the callbacks (one each), else wall."""
    timed, built = [f for f in frames if f["wall_s"] is not None], built or []
    if state in (WARM, REWARM):  # a warm compile's g++ runs are the environment's one-time builds, not the compile's
        cpu = [max(0.0, c - b) for c, b in zip(cpu, built, strict=True)] if len(built) == len(cpu) else cpu
    wall, cpu_total = sum(f["wall_s"] for f in timed), sum(cpu)
    per_graph_cpu = len(cpu) == len(frames)
    basis, total, unit = (
        ("cpu", cpu_total, calibration["cpu_s"])
        if cpu and calibration["cpu_s"] > 0
        else ("wall", wall, calibration["wall_s"])
    )
    graphs = []
    for i, f in enumerate(frames):
        seconds = cpu[i] if basis == "cpu" and per_graph_cpu else f["wall_s"]
        unit_of = unit if basis == "cpu" and per_graph_cpu else calibration["wall_s"]
        graphs.append(
            {
                "name": f["name"],
                "wall_s": None if f["wall_s"] is None else round(f["wall_s"], 3),
                "cpu_s": round(cpu[i], 3) if per_graph_cpu else None,
                "cache": f["cache"],
                "ratio": round(seconds / unit_of, 2) if seconds is not None and unit_of > 0 else None,
            }
        )
    return {
        "state": state,
        "basis": basis,
        "built_s": round(sum(built), 3),
        "total_s": round(total, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu_total, 3),
        "calibration_s": round(unit, 4),
        "calibration": {k: round(v, 4) for k, v in calibration.items()},
        "calibration_spread": round(calibration.get("spread", 0.0), 4),
        "ratio": round(total / unit, 2) if unit > 0 else None,
        "wall_ratio": round(wall / calibration["wall_s"], 2) if calibration["wall_s"] > 0 else None,
        "graphs": graphs,
    }
