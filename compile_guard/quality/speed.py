"""Steady-state step latency, eager and compiled interleaved on one rank, and peak device memory of each.

A "step" is the recorded warmup calls of the compiled region in order (the engine's chunk, a target's input
steps). Each repeat times an eager step and a compiled step back to back, the order alternating (ABBA), so a
slow patch of the machine lands on both. A sample is eager / compiled of one repeat: a speedup, judged against
the baseline's samples by a factor and a Mann-Whitney test (compile_guard.quality.judge).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.distributed as dist

from compile_guard.quality import stats
from engine import knobs
from engine.collectives import all_gather_json


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MIN_STEPS = 3  # at least this many steps per sample, the fastest kept: one step alone is a noisy sample (TP=2 on 2
# cores: a lone tp2 step's eager/compiled ratio spread 0.7-2.4 within one run, its median over runs 1.31-1.54)
SAMPLE_S = 0.02  # each timed sample runs the step enough times to last about this long and keeps the fastest:
# what slows a step here is added time (a peer descheduled on a shared core, another process), never taken away,
# so the minimum is the step's own cost (timeit's argument); benchmarks/bench_quality.py measured the spread left


def _timed(step: Callable[[], None], device: torch.device, inner: int = 1) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of `inner` steps, each taken alone. CPU: this process's, every thread
    (the gloo threads that reduce included); a step blocked waiting for a peer spends none."""
    wall = cpu = float("inf")
    for _ in range(inner):
        _sync(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        wall, cpu = min(wall, time.perf_counter() - started), min(cpu, time.process_time() - cpu_started)
    return wall, cpu


def measure_speed(
    eager: Callable[[], None],
    compiled: Callable[[], None],
    *,
    repeats: int,
    device: torch.device,
    group: dist.ProcessGroup,
) -> dict[str, Any]:
    # glibc's malloc thresholds fixed by the launcher (compile_guard.quality.options.STEADY_ALLOCATOR_ENV says why)
    steady = knobs.read("MALLOC_MMAP_THRESHOLD_") is not None
    eager(), compiled()  # once each, untimed: first-call work (allocations, lazy init) is not steady state
    # steps per sample from one timed eager step, agreed across the ranks (the largest: every rank runs as many
    # steps, so their collectives pair up); the gather also starts the ranks' timed loops together
    mine = max(MIN_STEPS, min(1000, round(SAMPLE_S / max(_timed(eager, device)[0], 1e-6))))
    inner_n = max(all_gather_json(mine, group=group, device=device))
    eager_s: list[tuple[float, float]] = []
    compiled_s: list[tuple[float, float]] = []
    for i in range(repeats):
        order = ((eager, eager_s), (compiled, compiled_s)) if i % 2 == 0 else ((compiled, compiled_s), (eager, eager_s))
        for step, out in order:
            out.append(_timed(step, device, inner_n))
    # Judged on CPU devices: CPU time. A step of the TP=2 engine (~20 ms) outlasts the scheduler's slice, so under
    # a CPU hog every step is preempted and its wall time says more about the hog than about the code (tp2's
    # wall speedup fell 1.31 -> 1.16 under one busy loop per core); CPU time does not count the time taken
    # away. On CUDA the device's time is the wall time after a synchronize.
    basis = "cpu" if device.type == "cpu" else "wall"
    pick = 1 if basis == "cpu" else 0
    samples = [e[pick] / c[pick] if c[pick] > 0 else 1.0 for e, c in zip(eager_s, compiled_s, strict=True)]
    wall = [e[0] / c[0] for e, c in zip(eager_s, compiled_s, strict=True)]
    return {
        "repeats": repeats,
        "steps_per_sample": inner_n,
        "steady_allocator": steady,
        "basis": basis,
        "eager_ms": round(stats.median([e[0] for e in eager_s]) * 1e3, 4),
        "compiled_ms": round(stats.median([c[0] for c in compiled_s]) * 1e3, 4),
        "eager_cpu_ms": round(stats.median([e[1] for e in eager_s]) * 1e3, 4),
        "compiled_cpu_ms": round(stats.median([c[1] for c in compiled_s]) * 1e3, 4),
        "speedup": round(stats.median(samples), 4),
        "wall_speedup": round(stats.median(wall), 4),
        "spread": [round(stats.quantile(samples, 0.25), 4), round(stats.quantile(samples, 0.75), 4)],
        "samples": [round(s, 4) for s in samples],
    }


def measure_memory(eager: Callable[[], None], compiled: Callable[[], None], device: torch.device) -> dict[str, Any]:
    """Peak device memory of one step, compiled / eager (CUDA's allocator). On CPU there is no per-phase peak:
    torch's CPU allocator keeps no high-water mark, and the process's RSS high-water is the whole life's."""
    if device.type != "cuda":
        return {"measured": False, "why": f"n/a on {device.type}: no per-step peak (CUDA's allocator only)"}
    peaks = {}
    for name, step in (("eager", eager), ("compiled", compiled)):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        peaks[name] = torch.cuda.max_memory_allocated(device) - before
    ratio = peaks["compiled"] / peaks["eager"] if peaks["eager"] else None
    return {
        "measured": True,
        "eager_bytes": peaks["eager"],
        "compiled_bytes": peaks["compiled"],
        "ratio": None if ratio is None else round(ratio, 4),
    }
