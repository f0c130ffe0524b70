"""A user's own serving loop guarded with compile_guard's one-call APIs, run on every rank by the tests.

    python tests/agreement_programs.py compile --fault recompile     # agree_on_compiles(group, "eager")
    python tests/agreement_programs.py ledger --fault extra          # CollectiveLedger(groups=[group])

Faults are chosen by argv, identical on every rank; rank 1 is the faulty one.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol

from compile_guard.agreement import CollectiveLedger, agree_on_compiles
from compile_guard.agreement.channel import MAX_ENTRY_BYTES
from engine.config import DistConfig
from engine.layout import ParallelLayout, RankContext
from engine.rank_process import leave, rank_main

FAULTY, AT_STEP = 1, 3
SLOW_COMPILE_S = 3.0  # with --window-s 1: a peer busy compiling for three windows


class Block(torch.nn.Module):
    def __init__(self, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.group = group
        self.scale = 1.0  # a Python float dynamo guards

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return funcol.all_reduce(x * self.scale, "sum", self.group)


def _slow_tracing(backend: Any) -> Any:
    """The agreeing backend reached 3x the window late, as after a long dynamo trace on one rank only (a
    big model, a cold cache): the time it takes is the fault, nothing waits on it."""

    def late(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        time.sleep(SLOW_COMPILE_S)
        return backend(gm, example_inputs)

    return late


def compile_loop(ctx: RankContext, args: argparse.Namespace) -> dict[str, Any]:
    group = ParallelLayout(ctx, tp=ctx.world_size).group("tp")
    faulty = ctx.rank == FAULTY
    backend = agree_on_compiles(group, "eager", window_s=args.window_s)  # the one documented call
    block = Block(group)
    model = torch.compile(block, backend=_slow_tracing(backend) if args.fault == "slow_compile" and faulty
                          else backend)  # fmt: skip
    if args.fault == "garbled" and faulty:  # a peer whose statement is over the size limit
        channel = backend.agreement.channel
        channel.publish = lambda n, rank, value, what: channel.store.set(channel.key("s", n, rank),
                                                                        b"x" * (MAX_ENTRY_BYTES + 1))
    try:
        for step in range(args.steps):
            if args.fault == "recompile" and faulty and step == AT_STEP:
                block.scale = 0.5  # rank 1 alone recompiles; rank 0 waits in graph 0's all-reduce
            model(torch.ones(4))
    finally:
        backend.agreement.close()
    return {"graphs": backend.agreement.graphs, "agreed": backend.agreement.agreed}


def ledger_loop(ctx: RankContext, args: argparse.Namespace) -> dict[str, Any]:
    group = ParallelLayout(ctx, tp=ctx.world_size).group("tp")
    faulty = ctx.rank == FAULTY
    with CollectiveLedger(groups=[group], wait_s=args.window_s) as ledger:
        for step in range(args.steps):
            x = torch.ones(4)
            dist.all_reduce(x, group=group)
            if faulty and step == AT_STEP and args.fault == "extra":
                dist.all_reduce(torch.ones(2), group=group)  # a debug sync left in on one rank
            if faulty and step == AT_STEP and args.fault == "stuck":
                threading.Event().wait()  # rank 1 never issues its next collective (until killed)
            dist.broadcast(x, src=0, group=group)
    return {"calls": dict(ledger.calls)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("api", choices=["compile", "ledger"])
    parser.add_argument("--fault", default="none",
                        choices=["none", "recompile", "garbled", "extra", "stuck", "slow_compile"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--window-s", type=float, default=1.0)
    args = parser.parse_args()
    body = compile_loop if args.api == "compile" else ledger_loop
    return rank_main(DistConfig(timeout_s=30.0), lambda ctx: body(ctx, args), lambda result: print(result))


if __name__ == "__main__":
    leave(main())
