"""The rank side of quality: after the check's run, on its own warmup calls, every part `Measure` asks for.

Order on every rank (each part runs the same collectives on every rank, so the ranks stay paired): accuracy
(eager twice, the fp64 reference, compiled) → parity of the replicated outputs → speed → memory → compile time
(its calibration; in cold mode the warm recompile). State: every variant of a call starts from the same
inputs (fresh copies, strides kept, so no guard fails) and the target's `before_step(i)` runs before each; the
module's parameters and buffers are cast to fp64 for the reference and restored exactly (the same storages)
after. A function that changes state it closes over must reset it in `before_step` (docs/targets.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from compile_guard import compat
from compile_guard.contracts.rank_report import QualityReport
from compile_guard.quality import accuracy, compile_time, machine, parity, speed
from compile_guard.quality.options import COLD, MIXED, REWARM, WARM, Measure
from engine import events

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Call:
    args: tuple[Any, ...]  # positional arguments, copied when recorded
    step: int | None = None  # the target's step index (its before_step runs with it), None for the engine


@dataclass(kw_only=True)
class Subject:
    """What is measured: the compiled callable, the same code eager, and its recorded calls."""

    compiled: Callable[..., Any]
    eager: Callable[..., Any]
    module: torch.nn.Module | None  # whose tensors the fp64 reference casts; None: a closure (eager reference)
    calls: list[Call] = field(default_factory=list)
    replicated: Callable[[str, Any], bool] = lambda name, value: parity.is_replicated_dtensor(value)
    before_step: Callable[[int], None] | None = None
    backend: str = "inductor"  # the compile backend (which cache states its compile time can be in)
    graph_count: Callable[[], int] = lambda: 0  # graphs compiled so far (the measurement's own recompiles show)


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """`fn` applied to every plain tensor (not a DTensor) in nested lists, tuples and dicts; the rest as is."""
    if isinstance(value, torch.Tensor) and not hasattr(value, "to_local"):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def copy_value(value: Any) -> Any:
    """Tensors copied with their size, stride and dtype (a guard on strides still holds); containers walked."""
    return _map_tensors(
        value, lambda t: torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device).copy_(t)
    )


def _fp64(value: Any) -> Any:
    return _map_tensors(value, lambda t: t.double() if t.is_floating_point() else t)


@contextlib.contextmanager
def in_fp64(module: torch.nn.Module) -> Iterator[None]:
    """The module's floating-point parameters and buffers as fp64 inside; the very same storages after."""
    saved = [(t, t.data) for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    try:
        for t, data in saved:
            t.data = data.double()
        yield
    finally:
        for t, data in saved:
            t.data = data


def _run(subject: Subject, fn: Callable[..., Any], call: Call, *, fp64: bool = False) -> Any:
    if subject.before_step is not None and call.step is not None:
        subject.before_step(call.step)
    args = copy_value(call.args)
    with torch.no_grad():
        out = fn(*(_fp64(args) if fp64 else args))
    return _waited(out)


def _waited(value: Any) -> Any:
    """Outputs with every pending collective waited for: eager functional collectives return a tensor that waits
    only when first used, so an unwaited eager step would be timed without its all-reduce."""
    if hasattr(value, "trigger_wait"):  # torch.distributed._functional_collectives.AsyncCollectiveTensor
        return value.trigger_wait()
    if isinstance(value, (list, tuple)):
        return type(value)(_waited(v) for v in value)
    if isinstance(value, dict):
        return {k: _waited(v) for k, v in value.items()}
    return value


def _accuracy(subject: Subject, calls: list[Call], opts: Measure) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    outputs, compiled_outputs, reference, why = [], [], "fp64" if subject.module is not None else "eager", ""
    for i, call in enumerate(calls):
        eager, eager_again = _run(subject, subject.eager, call), _run(subject, subject.eager, call)
        fp64 = None
        if reference == "fp64":
            try:
                with in_fp64(subject.module):
                    fp64 = _run(subject, subject.eager, call, fp64=True)
            except (RuntimeError, TypeError) as exc:  # a tensor the module holds outside its parameters, say
                reference, why = "eager", f"the fp64 reference failed ({type(exc).__name__}: {str(exc)[:160]})"
                log.warning("quality: %s; judging compiled against eager only", why)
        compiled = _run(subject, subject.compiled, call)
        leaves = compat.flatten_with_paths(compiled)
        ref_leaves = dict(compat.flatten_with_paths(fp64)) if fp64 is not None else {}
        for (name, value), (_, e1), (_, e2) in zip(
            leaves, compat.flatten_with_paths(eager), compat.flatten_with_paths(eager_again), strict=True
        ):
            label = f"call{i}{name}"
            outputs.append(
                accuracy.rule_output(
                    label,
                    parity.local(value),
                    parity.local(e1),
                    parity.local(e2),
                    None if fp64 is None else parity.local(ref_leaves[name]),
                    tol_override=opts.tolerance,
                )
            )
            if subject.replicated(name, value):
                compiled_outputs.append((label, parity.local(value)))
    return {"reference": reference, "why": why, "outputs": outputs}, compiled_outputs


def measure(
    subject: Subject,
    opts: Measure,
    *,
    group: dist.ProcessGroup,
    ranks: tuple[int, ...],
    device: torch.device,
    what: str,
    clock: compile_time.CompileClock | None,
) -> QualityReport:
    """Every part `opts` asks for: the rank report's quality. OutputDrift (exit 1) on a replicated output
    that differs across the ranks."""
    started = time.perf_counter()
    calls = subject.calls[: opts.max_calls]
    graphs_before = subject.graph_count()
    result: dict[str, Any] = {"calls": len(calls)}
    parts: dict[str, float] = {}  # wall seconds of each part: what the measurement costs, part by part
    frames = clock.stop() if clock is not None else []
    if not calls:
        return QualityReport(calls=len(calls), skipped="no call of the compiled region was recorded")
    replicated: list[tuple[str, Any]] = []
    mark = time.perf_counter()
    if opts.accuracy or opts.parity:  # parity compares the compiled outputs the accuracy replays make
        judged, replicated = _accuracy(subject, calls, opts)
        if opts.accuracy:
            result["accuracy"] = judged
    if opts.parity:
        result["parity"] = parity.check(replicated, group=group, ranks=ranks, device=device, what=what)
    parts["accuracy"], mark = round(time.perf_counter() - mark, 3), time.perf_counter()

    def step(fn: Callable[..., Any], steps: list[Call] = calls[:1]) -> Callable[[], None]:
        """One step: the first recorded call (a generator call of the engine, a target's first input step); the
        warm recompile replays them all."""

        def run_calls() -> None:
            for call in steps:
                _run(subject, fn, call)

        return run_calls

    if opts.speed:
        compiled_step = speed.slower(step(subject.compiled), device)  # as it is, unless a test slows it
        result["speed"] = speed.measure_speed(
            step(subject.eager), compiled_step, repeats=opts.repeats, device=device, group=group
        )
    parts["speed"], mark = round(time.perf_counter() - mark, 3), time.perf_counter()
    if opts.speed or opts.compile_time != "off":
        result["machine"] = machine.machine(device)  # what the timings are comparable with
    if opts.memory:
        result["memory"] = speed.measure_memory(step(subject.eager), step(subject.compiled), device)
    if opts.compile_time != "off" and clock is not None:
        result["compile_time"] = _compile_time(subject, frames, clock, opts, step, group=group, device=device)
    parts["compile_time"] = round(time.perf_counter() - mark, 3)
    result["parts_s"] = parts
    result["recompiled"] = subject.graph_count() - graphs_before  # the measurement's own compiles (warm replay)
    result["wall_s"] = round(time.perf_counter() - started, 3)
    events.emit(
        "quality_measured",
        wall_s=result["wall_s"],
        speedup=result.get("speed", {}).get("speedup"),
        compile_state=",".join(result.get("compile_time", {})) or None,
    )
    return QualityReport(**result)


def _compile_time(
    subject: Subject,
    frames: list[dict[str, Any]],
    clock: compile_time.CompileClock,
    opts: Measure,
    step: Callable[..., Callable[[], None]],
    *,
    group: dist.ProcessGroup,
    device: torch.device,
) -> dict[str, Any]:
    cpu = clock.cpu
    state = compile_time.state_of(frames, subject.backend, empty_cache=clock.cold)
    measured = {
        state: compile_time.summary(frames, state=state, cpu=cpu, calibration=clock.calibration(), built=clock.built)
    }
    if clock.cold and state == COLD:
        # the same program again from the cache the cold compile filled: its warm figure, in this same run
        torch.compiler.reset()
        clock = compile_time.CompileClock()
        step(subject.compiled, subject.calls)()
        warm_frames = clock.stop()
        # "rewarm": from the disk cache, in a process whose in-memory caches are hot; compared with rewarm only
        warm_state = REWARM if compile_time.state_of(warm_frames, subject.backend) == WARM else MIXED
        measured[warm_state] = compile_time.summary(
            warm_frames, state=warm_state, cpu=clock.cpu, calibration=clock.calibration(), built=clock.built
        )
        alone = _cold_alone(subject, step, group=group, device=device)
        if alone is not None:  # the judged cold figure; the run's own compile beside it, reported
            measured[COLD] = {**alone, "live": {k: measured[COLD][k] for k in ("total_s", "wall_s", "ratio")}}
    return measured


def _cold_alone(
    subject: Subject, step: Callable[..., Callable[[], None]], *, group: dist.ProcessGroup, device: torch.device
) -> dict[str, Any] | None:
    """The cold compile again, each rank alone (speed.alone: in turns on a CPU device) in an empty cache directory
    of its own, inductor's in-process caches cleared, its first call's collectives served locally. Two ranks
    compiling at once on one host slow each other unevenly (a cold compile of the quality example alone: 7.8-8.4
    s CPU over 5 runs; two at once: 7.2-12.7 s), so the run's own cold compile is reported and this one judged.
    None where it cannot run alone (the run's own compile is judged then)."""

    def compile_cold() -> dict[str, Any] | None:
        torch.compiler.reset()
        compat.clear_inductor_caches()  # kernels this process loaded would skip the build: not cold
        with compile_time.empty_cache_dir():
            clock = compile_time.CompileClock(cold=True)
            step(subject.compiled, subject.calls)()
            frames = clock.stop()
        if compile_time.state_of(frames, subject.backend, empty_cache=True) != COLD:
            return None
        found = compile_time.summary(
            frames, state=COLD, cpu=clock.cpu, calibration=clock.calibration(), built=clock.built
        )
        return {**found, "alone": True}

    found, why = speed.alone(group, device, compile_cold)
    if why:
        log.warning("compile time: %s; judging the run's own cold compile", why)
    return found
