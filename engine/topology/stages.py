"""A topology's run in named stages: the one seam a harness drives the engine through.

    prepared = tp.prepare(ctx, spec)        # stage 1: groups, configs, the env parity handshake
    built = prepared.build(hooks)           # stage 2: the generator shard, its fingerprints (or pp1's driver)
    summary = built.serve()                 # stage 3: the stream of chunks; this rank's summary

Between the stages a harness runs what it needs on the symmetric group (`prepared.group`,
`prepared.ranks`): compile_guard's compile and effective-backend handshakes, its agreement and
probe on the one compiled region (`built.region`). It never reaches into the executor, the
generator or the timers: what a run did comes back in the summary. A topology's own `run` is the
three stages in a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.distributed as dist

from engine.compile import CompileConfig, CompiledRegion
from engine.config import ModelConfig
from engine.hooks import Hooks
from engine.layout import ParallelLayout, RankContext

MESH, DRIVER = "mesh", "driver"


@dataclass(frozen=True, kw_only=True)
class Built:
    """One rank's engine, built, not serving yet."""

    role: str  # MESH: generates in the symmetric group; DRIVER: pp1's rank 0, drives the mesh, compiles nothing
    region: CompiledRegion | None  # the generator's compiled region (None for the driver)
    effective_backend: dict[str, Any]  # what `auto` resolved to on this rank ({} for the driver)
    serve: Callable[[], dict[str, Any]]  # stage 3: run the stream; this rank's summary (generator calls, timers)


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """One rank after stage 1: its groups and configs, parity-checked; nothing built yet."""

    ctx: RankContext
    layout: ParallelLayout
    cfg: ModelConfig
    ccfg: CompileConfig
    role: str  # MESH or DRIVER
    # the symmetric group: compile settings and compile health must match inside it (None for the driver)
    group: dist.ProcessGroup | None
    ranks: tuple[int, ...]  # its global ranks (() for the driver)
    builder: Callable[[Prepared, Hooks], Built]  # the topology's stage 2

    def build(self, hooks: Hooks | None = None) -> Built:
        return self.builder(self, hooks or Hooks())


def serve_counted(serve: Callable[[], dict[str, Any]], ex: Any) -> Callable[[], dict[str, Any]]:
    """`serve`, its summary completed with what every mesh rank reports: generator calls and timers."""

    def run() -> dict[str, Any]:
        summary = serve()
        return {**summary, "generator_calls": ex.gen.num_calls, **ex.timers}

    return run
