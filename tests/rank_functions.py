"""Functions the pytest-plugin tests run on every rank (via compile_guard.ranks.call)."""

from __future__ import annotations

import torch

from compile_guard import TargetContext
from compile_guard.health.probe import CompileProbe
from compile_guard.health.schema import baseline_view
from engine.collectives import TPCollectives
from engine.compile import CompileConfig, CompiledRegion


def allreduce_rank_plus_one(ctx: TargetContext) -> float:
    x = torch.tensor([ctx.rank + 1.0])
    return float(TPCollectives(group=ctx.tp_group).all_reduce_sum(x).item())


def compiled_allreduce_health(ctx: TargetContext) -> dict:
    """A compiled TP op (functional all-reduce): its compile health, as the check reports it."""
    comm = TPCollectives(group=ctx.tp_group)
    region = CompiledRegion("t", lambda x: comm.all_reduce_sum(x * 2) + 1, CompileConfig(enabled=True, backend="eager"))
    probe = CompileProbe(region)
    region(torch.ones(4))
    region(torch.ones(4))
    return baseline_view(probe.health(effective_backend={"compile_backend": "eager"}))


def raises(ctx: TargetContext) -> None:
    raise RuntimeError(f"rank {ctx.rank} fails on purpose")
