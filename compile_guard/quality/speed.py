"""Steady-state step latency, eager and compiled, and peak device memory of each.

A "step" is the first recorded call of the compiled region (the engine's generator call, a target's first
input step). Two figures per rank:

- **local** (judged): the rank's own eager and compiled steps with every collective served by a local fake
  group (compile_guard.compat.local_collectives), so no step waits on a peer or pays for its scheduling; on a
  CPU device the ranks take turns (one measures, the others wait on the job's store, idle), each timed by the
  measuring thread's CPU time (the process's when torch runs more than one thread), on CUDA by the device's
  time. Pairs of an eager and a compiled sample, their order alternating (ABBA), each sample the fastest of a
  few steps (what slows a step here is added time, never taken away: timeit's argument). A pair's ratio is one
  speedup sample; the median is the figure, its robust standard error beside it (compile_guard.quality.stats).
- **live** (reported): the same steps in the running TP job, collectives and peers included, interleaved with
  every rank stepping together: what the job's users get, too coupled to its peers' noise to judge.

A torch without the local replay's entry points gives the live figure as the judged one, and says so.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from compile_guard import compat
from compile_guard.quality import stats
from engine import knobs
from engine.collectives import all_gather_json

log = logging.getLogger(__name__)
T = TypeVar("T")

LIVE_PAIRS = 2  # pairs of the live figure (one ABBA quad): reported, never judged
LIVE_STEPS = 2  # steps per live sample, the fastest kept (a lone TP step spread 0.7-2.4 within one run)
# a local sample runs the step enough times to last about this long, and keeps the fastest: the first step after
# the other variant ran pays for caches the other one filled (single-step samples of the quality block alternated
# 1.47 / 1.58 with the ABBA order), so a short step is timed at least twice; a long one (>= this) once
SAMPLE_S = 0.015
MAX_STEPS = 64
# a short step gets more pairs than --repeats, up to this much CPU per rank: the figure's error shrinks with the
# pairs, and a 5 ms step's 20 pairs take 0.4 s (a long step keeps --repeats: the cost is the check's wall)
LOCAL_BUDGET_S = 0.6
MAX_PAIRS = 200


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock() -> tuple[str, Callable[[], float]]:
    """The CPU clock of a local sample: this thread's when torch computes on it alone (no other thread of the
    process, no other process, is counted), else the process's (intra-op threads compute too)."""
    if torch.get_num_threads() == 1:
        return "thread", time.thread_time
    return "process", time.process_time


def _fastest(step: Callable[[], None], device: torch.device, steps: int, clock: Callable[[], float]) -> float:
    """Seconds of the fastest of `steps` steps: on CPU by `clock`, on CUDA by the device's events."""
    best = math.inf
    for _ in range(steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        else:
            started = clock()
            step()
            best = min(best, clock() - started)
    return best


def _pairs(
    eager: Callable[[], None], compiled: Callable[[], None], device: torch.device, n: int, steps: int, clock: Any
) -> tuple[list[float], list[float]]:
    """`n` pairs of (eager, compiled) samples, ordered ABBA: eager first in even pairs, compiled first in odd."""
    eager_s: list[float] = []
    compiled_s: list[float] = []
    for i in range(n):
        order = ((eager, eager_s), (compiled, compiled_s)) if i % 2 == 0 else ((compiled, compiled_s), (eager, eager_s))
        for step, out in order:
            out.append(_fastest(step, device, steps, clock))
    return eager_s, compiled_s


def _summary(eager_s: list[float], compiled_s: list[float]) -> dict[str, Any]:
    """The speedup samples: one per ABBA quad, the geometric mean of its two pairs' ratios. A step that follows
    the other variant runs slower for a while (its caches, the allocator's free lists), so eager-then-compiled
    and compiled-then-eager pairs differ (the quality block's by ~5 % either way, even as the fastest of 3 steps);
    in a quad each variant runs once after itself and once after the other, and the penalty cancels."""
    pairs = [e / c if c > 0 else 1.0 for e, c in zip(eager_s, compiled_s, strict=True)]
    samples = [math.sqrt(a * b) for a, b in zip(pairs[0::2], pairs[1::2], strict=False)] or pairs
    _log_median, se = stats.log_median_se(samples)
    return {
        "speedup": round(stats.median(samples), 4),
        "spread": [round(stats.quantile(samples, 0.25), 4), round(stats.quantile(samples, 0.75), 4)],
        "samples": [round(s, 4) for s in samples],
        "se": round(se, 5) if math.isfinite(se) else None,  # of ln(speedup)
        "eager_ms": round(stats.median(eager_s) * 1e3, 4),
        "compiled_ms": round(stats.median(compiled_s) * 1e3, 4),
    }


def _local(eager: Callable[[], None], compiled: Callable[[], None], device: torch.device, repeats: int) -> dict:
    """This rank's local figure (the caller serves its collectives locally)."""
    clock_name, clock = _clock()
    eager(), compiled()  # once each, untimed: first-call work (allocations, lazy init) is not steady state
    e, c = _fastest(eager, device, 1, clock), _fastest(compiled, device, 1, clock)
    one = max(e, c)
    steps = 1 if one >= SAMPLE_S else max(2, min(MAX_STEPS, round(SAMPLE_S / max(one, 1e-6))))
    pairs = max(repeats, min(MAX_PAIRS, int(LOCAL_BUDGET_S / max(steps * (e + c), 1e-6))))
    pairs -= pairs % 2  # whole ABBA quads
    eager_s, compiled_s = _pairs(eager, compiled, device, pairs, steps, clock)
    return {
        **_summary(eager_s, compiled_s),
        "repeats": pairs,
        "steps_per_sample": steps,
        "clock": clock_name if device.type == "cpu" else "cuda events",
    }


def _live(eager: Callable[[], None], compiled: Callable[[], None], device: torch.device, group: Any) -> dict:
    """The live figure: every rank steps together, collectives real (the job as its users run it)."""
    eager(), compiled()
    _sync(device)
    # the same pairs and steps on every rank, so the collectives pair up; the gather also lines the ranks up
    all_gather_json(0, group=group, device=device)
    eager_s, compiled_s = _pairs(eager, compiled, device, LIVE_PAIRS, LIVE_STEPS, time.perf_counter)
    return {**_summary(eager_s, compiled_s), "clock": "wall"}


# how long a rank waits for a peer's turn: a turn is a whole cold compile on one core (tp2's: 25-40 s of CPU, more
# on a newer torch or a bigger model), longer than the group's own collective timeout (30 s here), so turns are
# taken through the job's store, whose waits take their own timeout. A peer that dies ends the wait sooner: the
# launcher (or torchrun) kills every rank on the first failure.
TURN_WAIT_S = 900.0
_CALLS = itertools.count()  # alone() calls in this process: the same sequence on every rank of a group


def _turns(group: dist.ProcessGroup) -> tuple[Callable[[str], None], Callable[[str], None]]:
    """(mark, wait): a key of this alone() call on the job's store, set by one rank and awaited by the others."""
    store = compat.default_store()
    ranks = "-".join(str(r) for r in dist.get_process_group_ranks(group))
    prefix = f"compile_guard/alone/{ranks}/{next(_CALLS)}"
    wait_for = timedelta(seconds=TURN_WAIT_S)

    def mark(key: str) -> None:
        store.set(f"{prefix}/{key}", b"1")

    def wait(key: str) -> None:
        store.wait([f"{prefix}/{key}"], wait_for)

    return mark, wait


def alone(group: dist.ProcessGroup, device: torch.device, body: Callable[[], T]) -> tuple[T | None, str]:
    """`body()` with every collective of this process served locally (compat.local_collectives), each rank alone:
    on a CPU device the ranks take turns (one runs, the others wait on the job's store, idle: ranks on one host
    share its cores, caches and memory bandwidth), on CUDA all at once. Returns (what it returned, or None with
    why not: no local replay on this torch, or code that cannot run without its peers)."""
    me, size = dist.get_rank(group), dist.get_world_size(group)
    mark, wait = _turns(group)
    mark(f"in/{me}")
    for r in range(size):  # every rank here: none is still at its previous step
        wait(f"in/{r}")
    found: T | None = None
    why = ""
    turns = device.type == "cpu"
    if turns and me > 0:
        wait(f"done/{me - 1}")
    try:
        restore = compat.local_collectives(device)
    except compat.TorchInternalMissing as exc:
        why = f"no local replay on this torch ({exc})"
    else:
        try:
            found = body()
        except Exception as exc:  # code that cannot run without its peers (it reads a collective's result, say)
            log.warning("the local replay failed", exc_info=True)
            why = f"the local replay failed ({type(exc).__name__}: {str(exc)[:200]})"
        finally:
            restore()
    mark(f"done/{me}")
    for r in range(size):  # every rank's turn over before any goes on
        wait(f"done/{r}")
    return found, why


def measure_speed(
    eager: Callable[[], None],
    compiled: Callable[[], None],
    *,
    repeats: int,
    device: torch.device,
    group: dist.ProcessGroup,
) -> dict[str, Any]:
    """The local figure (judged) and the live one (reported); see the module's docstring."""
    # glibc's malloc thresholds fixed by the launcher (compile_guard.quality.options.STEADY_ALLOCATOR_ENV says why)
    steady = knobs.read("MALLOC_MMAP_THRESHOLD_") is not None
    live = _live(eager, compiled, device, group)
    local, why = alone(group, device, lambda: _local(eager, compiled, device, repeats))
    if local is None:
        why += "; judged on the live figure"
        log.warning("speed: %s", why)
    judged = local if local is not None else live
    return {
        **judged,
        "basis": "local" if local is not None else "live",
        "why": why,
        "turns": device.type == "cpu",
        "steady_allocator": steady,
        "live": {k: live[k] for k in ("speedup", "spread", "eager_ms", "compiled_ms", "clock")},
    }


def slower(compiled: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """Test-only (COMPILE_GUARD_TEST_SLOWER_STEP=f, every rank alike): the compiled step followed by CPU work of f
    times the step's own cost, measured here (the median of 5 steps by this thread's CPU time): a speed loss of
    known size for benchmarks/bench_quality.py's detection curve. Unset: the step as it is."""
    fraction = knobs.read("COMPILE_GUARD_TEST_SLOWER_STEP")
    if not fraction:
        return compiled
    compiled()
    cost = stats.median([_fastest(compiled, device, 1, time.thread_time) for _ in range(5)])
    extra = fraction * cost

    def step_and_burn() -> None:
        compiled()
        _sync(device)
        end = time.thread_time() + extra
        while time.thread_time() < end:
            pass

    return step_and_burn


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
