"""Targets for the exit-code tests (`check --target tests.targets:NAME`): failures that differ by rank."""

from __future__ import annotations

from compile_guard import GuardTarget, TargetContext
from docs.examples import tp_mlp


def wrong_on_rank1(ctx: TargetContext) -> GuardTarget | dict:
    """Rank 1's factory returns the wrong thing (exit 2 there); rank 0 builds and waits in its next handshake for
    a peer that left (exit 16 there): in place, both ranks must still exit the same code, the culprit's 2."""
    return {"fn": None} if ctx.rank == 1 else tp_mlp.good(ctx)
