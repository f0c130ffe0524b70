"""What the engine lets a harness see and touch: named injection points and an observer.

The engine calls `hooks.at(point, site)` at each named point and `hooks.after_chunk(...)`
after every chunk; the default `Hooks` does nothing. A harness passes its own object in:
compile_guard's fault injector (the matrix) acts at points, its probes observe chunks.
The engine knows the points and what a site holds, never who acts on them or why.

A site is mutable on purpose: at a point the harness may change what the site holds (a
request's plan, the group a collective is about to get) and the engine uses what is there
afterwards. Points that carry nothing to change are moments (a header just went out).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Point(str, enum.Enum):
    REQUEST_BUILT = "request_built"  # rank0: a chunk request before preflight (site: plan, tensors, extras)
    HEADER_SENT = "header_sent"  # rank0: a header went out, its payload not yet
    PAYLOAD_SENT = "payload_sent"  # rank0: a payload went out (site: sender, manifest)
    IDLE_TICK = "idle_tick"  # rank0: one heartbeat of an idle period
    PLAN_RECEIVED = "plan_received"  # a receiver decoded a plan, before validating it (site: plan)
    CHUNK_INPUTS = "chunk_inputs"  # every rank: a chunk's inputs before the agreement (site: tensors, model)
    AGREEMENT_GROUP = "agreement_group"  # every rank: the group the pre-generator gather gets (site: group)
    PHASE_B = "phase_b"  # every rank: a chunk's inputs after the agreement, before Phase B (site: tensors, model)
    ATTENTION_RESOLVED = "attention_resolved"  # build: what attn_impl=auto became (site: attn_impl, requested)
    MODEL_BUILT = "model_built"  # build: the generator's model before its first call (site: model)
    RESULT_READY = "result_ready"  # PP stage 1: a result before it is sent back


@dataclass(kw_only=True)
class Site:
    rank: int  # global rank at the point
    chunk_index: int  # the chunk it concerns (-1: warmup or build time)
    values: dict[str, Any] = field(default_factory=dict)  # what the point exposes; may be changed in place

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value


class Hooks:
    """No-op hooks: the engine as it runs in production."""

    def at(self, point: Point, site: Site) -> None:
        """Called at each named point; may change `site.values` in place."""

    def after_chunk(self, *, rank: int, chunk_index: int, generator_calls: int) -> None:
        """Called on every rank after each chunk's Phase B and tripwires."""


class HookChain(Hooks):
    """Several hooks in order (a fault injector and a probe, say)."""

    def __init__(self, *chain: Hooks) -> None:
        self.chain = chain

    def at(self, point: Point, site: Site) -> None:
        for hooks in self.chain:
            hooks.at(point, site)

    def after_chunk(self, *, rank: int, chunk_index: int, generator_calls: int) -> None:
        for hooks in self.chain:
            hooks.after_chunk(rank=rank, chunk_index=chunk_index, generator_calls=generator_calls)


def at(hooks: Hooks, point: Point, *, rank: int, chunk_index: int, **values: Any) -> dict[str, Any]:
    """Run `point` with these values; return them as the hooks left them."""
    site = Site(rank=rank, chunk_index=chunk_index, values=values)
    hooks.at(point, site)
    return site.values
