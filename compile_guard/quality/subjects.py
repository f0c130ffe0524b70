"""What the ranks hand the quality measurement: the engine's compiled region, or a user's target.

`Recorder` keeps copies of the region's calls until told to stop (the engine: the warmup chunk's calls); a
target's calls are its input steps, known up front.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

from compile_guard import compat
from compile_guard.quality import compile_time, parity
from compile_guard.quality.measure import Call, Subject, copy_value
from compile_guard.quality.options import Measure
from engine.compile import CompiledRegion


def owner_module(fn: Callable[..., Any]) -> torch.nn.Module | None:
    """The module whose parameters `fn` computes with: the module itself, or a bound method's; None for a
    closure (its tensors are out of reach: compiled is judged against eager only)."""
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


class Recorder:
    """Copies of a region's calls (at most `limit`) while `recording`."""

    def __init__(self, region: CompiledRegion, limit: int) -> None:
        self.calls: list[Call] = []
        self.recording, self.limit = True, limit
        region.call_observers.append(self._observe)

    def _observe(self, args: tuple[Any, ...]) -> None:
        if self.recording and len(self.calls) < self.limit:
            self.calls.append(Call(args=copy_value(args)))


def engine_subject(region: CompiledRegion, calls: list[Call], backend: str) -> Subject:
    """The engine's generator: its output 0 (the flow) is all-reduced, so replicated; K and V are head shards."""
    return Subject(
        compiled=region,
        eager=region.eager,
        module=owner_module(region.eager),
        calls=calls,
        replicated=lambda name, value: name == "[0]",
        backend=backend,
        graph_count=lambda: region.graph_count,
    )


def target_subject(region: CompiledRegion, target: Any, backend: str) -> Subject:
    declared = target.replicated

    def replicated(name: str, value: Any) -> bool:
        if parity.is_replicated_dtensor(value) or declared is True:
            return True
        return declared is not False and any(name.startswith(f"[{i}]") for i in declared)

    return Subject(
        compiled=region,
        eager=region.eager,
        module=owner_module(region.eager),
        calls=[Call(args=copy_value(args), step=i) for i, args in enumerate(target.inputs)],
        replicated=replicated,
        before_step=target.before_step,
        backend=backend,
        graph_count=lambda: region.graph_count,
    )


@contextlib.contextmanager
def compile_cache(opts: Measure, backend: str) -> Iterator[bool]:
    """Where the run compiles; yields whether cold (an empty inductor cache directory of its own). --compile-time
    cold: one removed after; auto, under inductor, with the cache empty as the rank starts: one merged into the
    cache after (compile_guard.quality.compile_time.cold_if_empty); else the cache as it is."""
    if opts.compile_time == "cold":
        with compile_time.empty_cache_dir():
            yield True
    elif opts.compile_time == "auto" and backend == "inductor":
        with compile_time.cold_if_empty(compat.inductor_cache_dir()) as cold:
            yield cold
    else:
        yield False
