"""A user's own serving loop guarded with compile_guard's one-call APIs, run on every rank by the tests.

    python tests/agreement_programs.py compile --fault recompile     # agree_on_compiles(group, "eager")
    python tests/agreement_programs.py ledger --fault extra          # CollectiveLedger(groups=[group])

Faults are chosen by argv, identical on every rank; the delays are the faults (nothing waits on them).
Healthy habits (never stopped): `late_first` / `late_recompile` (rank 0 spends --late-s of eager work
before its first call / before the step where every rank meets a new shape), `sigstop` (rank 1
SIGSTOPs rank 0 for --late-s, then SIGCONTs it), `varying` (a vocab-parallel offset: a constant that
differs by rank), `rank_print` (a print in forward on rank 1: a rank-only graph break whose
collectives still line up — reported, stopped only with stop_on_asymmetry), `print_every_rank` (the
same print on every rank: one resume function each), `slow_compile`, ledger `idle` (rank 0 serves no
request for --late-s). Faults (rank 1 unless said): `recompile` (a rank-only recompile mid-step),
`break_both` (rank 0 prints before the shard math, rank 1 after it: each breaks forward elsewhere),
`skip` (a disabled call in a loop on rank 1: dynamo skips its forward), `garbled` (an oversized
statement), `foreign` (a statement without its fingerprint, as another version of compile_guard would
write it), `frozen` (rank 0 SIGSTOPped for good), `stuck` (rank 0 blocks for good); ledger `extra`, `stuck`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol

from compile_guard import CollectiveLedger, agree_on_compiles, compat
from compile_guard.agreement.ops import MAX_ENTRY_BYTES
from engine.config import DistConfig
from engine.layout import ParallelLayout, RankContext
from engine.rank_process import leave, rank_main

FAULTY, AT_STEP = 1, 3
RESULT = "program result:"  # the line each rank prints its result on, as JSON (tests/test_agreement.py reads it)
SLOW_COMPILE_S = 3.0  # a peer busy compiling for longer than a probe interval


def shard_math(x: torch.Tensor, offset: int, scale: float) -> torch.Tensor:
    """Inlined into forward's graph; compiled as a frame of its own where dynamo skips forward."""
    return (x - offset).clamp(min=0) * scale


@torch.compiler.disable
def _touch(x: torch.Tensor) -> torch.Tensor:
    return x  # "keep this out of the graph": a debug hook one rank installed


class Block(torch.nn.Module):
    def __init__(self, group: dist.ProcessGroup, offset: int) -> None:
        super().__init__()
        self.group = group
        self.scale = 1.0  # a Python float dynamo guards
        self.offset = offset  # a Python int baked into the graph: `rank * chunk` in a vocab-parallel layer
        self.debug = False  # a print inside forward: a graph break
        self.debug_early = False  # a print before the shard math: a graph break at another place
        self.skip = False  # a disabled call inside a loop: dynamo skips forward and compiles shard_math alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.debug_early:
            print("debug: x", x.shape)
        local = shard_math(x, self.offset, self.scale)
        if self.debug:
            print("debug: local", local.shape)  # on one rank only, as a library warning left on rank 0 does
        for _ in range(1 if self.skip else 0):
            local = _touch(local)
        return funcol.all_reduce(local, "sum", self.group)


def _slow_tracing(backend: Any) -> Any:
    """The agreeing backend reached late on one rank only (a big model, a cold cache)."""

    def late(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        time.sleep(SLOW_COMPILE_S)
        return backend(gm, example_inputs)

    return late


def _peer_pid(ctx: RankContext, peer: int) -> int:
    store = compat.default_store()
    store.set(f"test/pid/{ctx.rank}", str(os.getpid()))
    store.wait([f"test/pid/{peer}"])
    return int(store.get(f"test/pid/{peer}").decode())


def _garble(statement: bytes, fault: str) -> bytes:
    """The statement as the fault publishes it: over the store's entry limit, or valid JSON without a field."""
    if fault == "garbled":
        return b"x" * (MAX_ENTRY_BYTES + 1)
    data = json.loads(statement)
    del data["fingerprint"]
    return json.dumps(data).encode()


def _before_step(ctx: RankContext, args: argparse.Namespace, step: int, pid0: int | None) -> None:
    """The fault's habit, on its rank, before `step`."""
    if args.fault == "late_first" and ctx.rank == 0 and step == 0:
        time.sleep(args.late_s)  # eager work before the first call: writing outputs, a GC pause
    if step != AT_STEP:
        return
    if args.fault == "late_recompile" and ctx.rank == 0:
        time.sleep(args.late_s)
    if args.fault in ("sigstop", "frozen") and ctx.rank == FAULTY:
        os.kill(pid0, signal.SIGSTOP)
        if args.fault == "sigstop":
            threading.Timer(args.late_s, os.kill, (pid0, signal.SIGCONT)).start()
    if args.fault == "stuck" and ctx.rank == 0:
        threading.Event().wait()  # rank 0 never comes back (until killed)


def compile_loop(ctx: RankContext, args: argparse.Namespace) -> dict[str, Any]:
    group = ParallelLayout(ctx, tp=ctx.world_size).group("tp")
    faulty = ctx.rank == FAULTY
    pid0 = _peer_pid(ctx, 0) if args.fault in ("sigstop", "frozen") else None
    backend = agree_on_compiles(group, "eager", stall_s=args.stall_s)  # the one documented call
    block = Block(group, offset=128 * ctx.rank if args.fault == "varying" else 0)
    block.debug = (
        (args.fault == "rank_print" and faulty)
        or args.fault == "print_every_rank"
        or (args.fault == "break_both" and faulty)
    )
    block.debug_early = args.fault == "break_both" and not faulty
    block.skip = args.fault == "skip" and faulty
    model = torch.compile(block, backend=_slow_tracing(backend) if args.fault == "slow_compile" and faulty else backend)
    if args.fault in ("garbled", "foreign") and faulty:  # a peer whose statement is over the limit, or not ours
        transport = backend.agreement.transport
        execute = transport.execute
        transport.execute = lambda op: execute(
            type(op)(op.key, _garble(op.value, args.fault)) if (type(op).__name__ == "Set" and "/s/" in op.key) else op
        )
    symmetric_new_shape = args.fault in ("late_recompile", "sigstop", "frozen", "stuck")
    try:
        for step in range(args.steps):
            _before_step(ctx, args, step, pid0)
            if args.fault == "recompile" and faulty and step == AT_STEP:
                block.scale = 0.5  # rank 1 alone recompiles; rank 0 waits in graph 0's all-reduce
            size = 6 if symmetric_new_shape and step >= AT_STEP else 4  # every rank: a new shape, a recompile
            model(torch.arange(size, dtype=torch.float32) + 128 * ctx.rank)
    finally:
        backend.agreement.close()
    agreement = backend.agreement
    return {
        "graphs": agreement.graphs,
        "agreed": agreement.agreed,
        "asymmetries": len(agreement.asymmetries),
        "rank_varying": sorted(c["site"] for c in agreement.rank_varying.values()),
    }


def ledger_loop(ctx: RankContext, args: argparse.Namespace) -> dict[str, Any]:
    group = ParallelLayout(ctx, tp=ctx.world_size).group("tp")
    faulty = ctx.rank == FAULTY
    with CollectiveLedger(groups=[group], stall_s=args.stall_s) as ledger:
        for step in range(args.steps):
            x = torch.ones(4)
            dist.all_reduce(x, group=group)
            if faulty and step == AT_STEP and args.fault == "extra":
                dist.all_reduce(torch.ones(2), group=group)  # a debug sync left in on one rank
            if faulty and step == AT_STEP and args.fault == "stuck":
                threading.Event().wait()  # rank 1 never issues its next collective (until killed)
            if ctx.rank == 0 and step == AT_STEP and args.fault == "idle":
                time.sleep(args.late_s)  # the server gets no request; rank 1 waits in its broadcast
            dist.broadcast(x, src=0, group=group)
    return {"calls": dict(ledger.calls)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("api", choices=["compile", "ledger"])
    parser.add_argument(
        "--fault",
        default="none",
        choices=[
            "none",
            "recompile",
            "garbled",
            "foreign",
            "extra",
            "stuck",
            "slow_compile",
            "late_first",
            "late_recompile",
            "sigstop",
            "frozen",
            "varying",
            "idle",
            "rank_print",
            "print_every_rank",
            "break_both",
            "skip",
        ],
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--late-s", type=float, default=3.0, help="the healthy delay of the late/idle faults")
    parser.add_argument("--stall-s", type=float, default=None, help="the agreements' stall window (default: derived)")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="the process group's timeout")
    args = parser.parse_args()
    body = compile_loop if args.api == "compile" else ledger_loop
    return rank_main(
        DistConfig(timeout_s=args.timeout_s),
        lambda ctx: body(ctx, args),
        lambda result: print(RESULT, json.dumps(result, sort_keys=True)),
    )


if __name__ == "__main__":
    leave(main())
