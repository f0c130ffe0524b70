"""Compile time: each frame compile of the run (dynamo + backend), wall and CPU, and a calibration measured in
the same run to divide it by.

A compile time in seconds moves with the machine (a loaded runner, another CPU); its ratio to a fixed piece of
CPU work timed in the same process moves much less (benchmarks/bench_quality.py measures both). The state is part of the figure: "warm" (inductor's FX-graph cache
served every graph), "cold" (an empty cache directory of the rank's own: `--compile-time cold`), "miss" (it served
no graph from a shared cache, whose kernels may still have been cached: not comparable), "mixed" (not comparable),
or "uncached" (a backend without that cache: aot_eager, eager); `--compile-time cold` adds "rewarm", the same program
compiled again in that process from the cache its cold compile filled. A baseline keeps one entry per state, and only like
is compared with like.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import tempfile
import time
from typing import Any, Callable, Iterator

import torch

from compile_guard import compat
from compile_guard.quality import stats
from compile_guard.quality.options import COLD, MISS, MIXED, UNCACHED, WARM

CACHE_DIR_VARIABLES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")  # inductor's caches, and triton's (CUDA)
# The calibration: fixed pure-Python work of the kind a compile does (parsing and compiling source, building and
# sorting tables), ~40 ms here. It moves with the machine (its speed, its load) and never with torch, so an
# upgrade that slows every compile shows in the ratio (a reference *compile* would slow down with it).
_FUNCTIONS = 300
_CALIBRATION_SOURCE = "\n".join(f"def f{i}(x):\n    y = [x + {i}, x * {i % 7}, str(x)]\n    return (len(y[2]), y[0] ^ y[1])"
                                for i in range(_FUNCTIONS))  # fmt: skip
CALIBRATION_REPEATS = 5
_LIMIT = 10_000


def _cpu_s() -> float:
    """This process's CPU time and that of its children that ended (g++ runs as one)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


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


class CompileClock:
    """Attach before the run's first compile; `frames()` after: every frame compile since, timed."""

    def __init__(self) -> None:
        self._since = compat.compile_records(0, limit=_LIMIT)[1]
        self._cpu: list[float] = []
        self._started: float | None = None
        self._remove = compat.on_compiles(self._start, self._end)

    def _start(self, _args: Any = None) -> None:
        self._started = _cpu_s()

    def _end(self, _args: Any = None) -> None:
        if self._started is not None:
            self._cpu.append(_cpu_s() - self._started)
            self._started = None

    def stop(self) -> list[dict[str, Any]]:
        """The frame compiles seen (compile id, frame, wall seconds, cache), and the compile CPU time in total."""
        self._remove()
        frames = []
        for record in compat.compile_records(self._since, limit=_LIMIT)[0]:
            hits, misses = record["fx_hits"], record["fx_misses"]
            cache = None if hits is None or misses is None else "hit" if hits and not misses else \
                "miss" if misses and not hits else "none" if not hits and not misses else "both"  # fmt: skip
            frames.append({"name": f"{record['compile_id']} {record['co_name']}", "wall_s": record["frame_s"],
                           "cache": cache})  # fmt: skip
        self.cpu_s = round(sum(self._cpu), 3)
        return frames


def state_of(frames: list[dict[str, Any]], backend: str, *, empty_cache: bool = False) -> str:
    """The run's cache state. Every FX-graph lookup missed: COLD only in an empty cache directory (--compile-time
    cold); in a shared one MISS, since its kernels may still have come from the cache (g++ skipped: 2.7 s where a
    cold compile took 9.7 s, docs.examples.quality_block here), so it is reported and never judged."""
    if backend != "inductor":
        return UNCACHED
    caches = {f["cache"] for f in frames if f["cache"] != "none"}  # a frame that made no graph looks up nothing
    if caches == {"miss"}:
        return COLD if empty_cache else MISS
    return WARM if caches == {"hit"} else MIXED


def _calibration_once() -> float:
    started = time.perf_counter()
    namespace: dict[str, Any] = {}
    exec(compile(_CALIBRATION_SOURCE, "<compile_guard calibration>", "exec"), namespace)  # our own constant text
    table = {f"k{i}": namespace[f"f{i % _FUNCTIONS}"](i) for i in range(20_000)}
    sorted(table.items(), key=lambda kv: (kv[1], kv[0]))
    return time.perf_counter() - started


def calibration_s() -> float:
    """The calibration's wall time, seconds: the median of CALIBRATION_REPEATS runs after one untimed (its first
    run builds caches of the interpreter's own)."""
    _calibration_once()
    return stats.median([_calibration_once() for _ in range(CALIBRATION_REPEATS)])


def summary(frames: list[dict[str, Any]], *, state: str, cpu_s: float, calibration: float) -> dict[str, Any]:
    """The state's figures: wall per frame compile and in total, CPU in total (this process and the children that
    ended: inductor's compile workers, with compile_threads > 1, are not counted), each wall / the calibration."""
    timed = [f for f in frames if f["wall_s"] is not None]
    total = sum(f["wall_s"] for f in timed)
    return {"state": state, "total_s": round(total, 3), "cpu_s": cpu_s, "calibration_s": round(calibration, 4),
            "ratio": round(total / calibration, 2) if calibration > 0 else None,
            "graphs": [{"name": f["name"], "wall_s": round(f["wall_s"], 3), "cache": f["cache"],
                        "ratio": round(f["wall_s"] / calibration, 2) if calibration > 0 else None} for f in timed]}  # fmt: skip
