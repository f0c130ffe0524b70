"""PP1: rank0 out of the mesh; ranks 1..N form `mesh_pg` with TP inside; rank1 leads it.

    python -m engine.pp1 --chunks 4      # on 1 + N ranks (3 here: rank0 + a TP=2 mesh)

rank0 builds envelopes (the same preflight) and sends them to the leader point to point;
it never enters a mesh collective. The leader receives, validates fully, and only then
broadcasts the envelope inside `mesh_pg` — its own commitment point, logged with
`group=mesh_pg`. A plan the leader rejects is never broadcast: the leader sends the
terminal ERROR action (with a reason code) to the mesh, so non-leaders exit cleanly, and
to rank0, then exits. Every mesh collective goes through the layout's group check, so a
collective handed `world_pg` where `mesh_pg` is expected stops before the backend call
(OM-08); the leader then tells rank0. Mesh ranks agree on the planned call count before
Phase B (FM-02). Watchdogs: non-leaders on the mesh broadcast, the leader on rank0's
envelopes, rank0 on results.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from engine import events, knobs
from engine.compile import CompileConfig
from engine.config import ModelConfig
from engine.decoder import LatentDecoder
from engine.envelope import Action, Header, Reason
from engine.errors import (
    CallCountMismatch,
    EngineError,
    PlanRejected,
    PreflightError,
    TerminatedByPeer,
    WrongGroup,
)
from engine.faults import FaultHooks
from engine.layout import ParallelLayout, RankContext
from engine.parity import handshake
from engine.runtime import Runtime, parity_payload, rank_main
from engine.stream import StreamBuilder, StreamConfig
from engine.transport import BroadcastChannel, ChunkRequest, EnvelopeReceiver, EnvelopeSender, P2PChannel
from engine.watchdog import Watchdog

log = logging.getLogger("engine.pp1")
DRIVER, LEADER = 0, 1
REASONS = {PlanRejected: Reason.PLAN_REJECTED, WrongGroup: Reason.WRONG_GROUP, CallCountMismatch: Reason.CALL_COUNT}


def _terminal(sender: EnvelopeSender, reason: Reason, *, chunk_index: int) -> None:
    header = Header(action=Action.ERROR, call_id=sender.next_call_id(), chunk_index=chunk_index,
                    cache_epoch=sender.cache_epoch, control_epoch=sender.control_epoch, reason=reason)  # fmt: skip
    events.emit("terminal_broadcast", reason=reason.name, group=sender.group_name, chunk_index=chunk_index)
    sender.send_header(header)


def drive(ctx: RankContext, layout: ParallelLayout, cfg: ModelConfig, args: argparse.Namespace) -> dict[str, Any]:
    """rank0: preflight, send to the leader, wait for its result (or its ERROR), decode."""
    hooks = FaultHooks.from_knobs()
    world = layout.group("world")
    sender = EnvelopeSender(cfg=cfg, channel=P2PChannel(group=world, name="world_pg", peer=LEADER), device=ctx.device)
    watchdog = Watchdog(window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S") * 4, rank=ctx.rank)  # covers a chunk
    results = EnvelopeReceiver(
        cfg=cfg, channel=P2PChannel(group=world, name="world_pg", peer=LEADER), device=ctx.device, rank=ctx.rank,
        watchdog=watchdog, hooks=hooks, accept=frozenset({Action.RESULT, Action.ERROR}),
    )  # fmt: skip
    builder = StreamBuilder(cfg, StreamConfig(chunks=args.chunks, recompute_every=args.recompute_every), hooks)
    decoder = LatentDecoder(cfg).to(ctx.device)
    done, rejected = [], []
    try:
        for k in [-1, *range(args.chunks)]:
            try:
                prepared = sender.preflight(builder.request(k))
            except PreflightError as exc:  # the leader never saw it: the job goes on
                rejected.append({"chunk_index": k, "stage": exc.stage, "key_path": exc.key_path})
                continue
            sender.send_header(prepared.header)
            sender.send_payload(prepared.meta, prepared.specs, prepared.tensors)
            builder.committed()
            header = results.recv_header()
            if header.action is Action.ERROR:
                raise TerminatedByPeer(f"the mesh leader stopped the job at chunk_index={header.chunk_index}:"
                                       f" {header.reason.name}; see rank {LEADER}'s log")  # fmt: skip
            _stats, tensors = results.recv_result(header)
            decoder(tensors["latents"])
            if k < 0:
                builder.restart(new_stream=False)
            else:
                builder.context(tensors["latents"])
                done.append(k)
        sender.control(Action.SHUTDOWN)
        sender.channel.drain()
    finally:
        watchdog.close()
    return {"chunks_done": done, "rejected": rejected}


def lead(ctx: RankContext, layout: ParallelLayout, rt: Runtime) -> dict[str, Any]:
    """rank1: receive from rank0, validate, broadcast to the mesh, generate, return the result."""
    world, mesh = layout.group("world"), layout.group("tp")
    watchdog = Watchdog(window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S"), rank=ctx.rank)
    inbox = EnvelopeReceiver(cfg=rt.cfg, channel=P2PChannel(group=world, name="world_pg", peer=DRIVER),
                             device=ctx.device, rank=ctx.rank, watchdog=watchdog, hooks=rt.hooks)  # fmt: skip
    to_mesh = EnvelopeSender(cfg=rt.cfg, channel=BroadcastChannel(group=mesh, name="mesh_pg", src=LEADER),
                             device=ctx.device)  # fmt: skip
    to_driver = EnvelopeSender(cfg=rt.cfg, channel=P2PChannel(group=world, name="world_pg", peer=DRIVER),
                               device=ctx.device)  # fmt: skip
    k, done = -1, []
    try:
        while True:
            header = inbox.recv_header()
            k = header.chunk_index
            if header.action is not Action.INFER:
                to_mesh.control(header.action)  # heartbeats and SHUTDOWN reach the non-leaders too
                if header.action is Action.SHUTDOWN:
                    to_driver.channel.drain()
                    return {"chunks_done": done}
                continue
            env = inbox.recv_envelope(header)
            if env.rejection:  # validate before the mesh broadcast: nothing of it reaches the mesh
                _terminal(to_mesh, Reason.PLAN_REJECTED, chunk_index=k)
                raise PlanRejected(f"leader rejects call_id={header.call_id} chunk_index={k}: {env.rejection}")
            request = ChunkRequest(chunk_index=k, plan=env.plan.to_json(), tensors=env.tensors)
            prepared = to_mesh.preflight(request)
            to_mesh.send_header(prepared.header)  # the mesh's commitment point (group=mesh_pg)
            to_mesh.send_payload(prepared.meta, prepared.specs, prepared.tensors)
            clean = rt.run_chunk(prepared.envelope())
            result = to_driver.prepare_result(chunk_index=k, cache_epoch=header.cache_epoch,
                                              stats={"observed_generator_calls": rt.last_chunk_calls},
                                              tensors={"latents": clean})  # fmt: skip
            to_driver.send_header(result.header)
            to_driver.send_payload(result.meta, result.specs, result.tensors)
            if k >= 0:
                done.append(k)
    except EngineError as exc:
        reason = next((r for cls, r in REASONS.items() if isinstance(exc, cls)), Reason.INTERNAL)
        _terminal(to_driver, reason, chunk_index=k)  # rank0 exits cleanly instead of waiting
        to_driver.channel.drain()
        raise
    finally:
        watchdog.close()


def follow(ctx: RankContext, layout: ParallelLayout, rt: Runtime) -> dict[str, Any]:
    """ranks 2..N: receive the leader's broadcast, generate in lockstep."""
    watchdog = Watchdog(window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S"), rank=ctx.rank)
    inbox = EnvelopeReceiver(cfg=rt.cfg, channel=BroadcastChannel(group=layout.group("tp"), name="mesh_pg",
                             src=LEADER), device=ctx.device, rank=ctx.rank, watchdog=watchdog, hooks=rt.hooks)
    done = []
    try:
        while True:
            header = inbox.recv_header()
            if header.action is Action.SHUTDOWN:
                return {"chunks_done": done}
            if header.action is Action.ERROR:
                raise TerminatedByPeer(f"rank {ctx.rank}: the leader ended the job at chunk_index="
                                       f"{header.chunk_index}: {header.reason.name}")  # fmt: skip
            if header.action is Action.INFER:
                rt.run_chunk(inbox.recv_envelope(header))
                if header.chunk_index >= 0:
                    done.append(header.chunk_index)
    finally:
        watchdog.close()


def prepare(ctx: RankContext, args: argparse.Namespace) -> tuple[ParallelLayout, ModelConfig, CompileConfig]:
    """world_pg + mesh_pg, configs, and the env parity handshake over the whole world."""
    tp = ctx.world_size - 1
    layout = ParallelLayout(ctx, tp=tp, driver_out_of_mesh=True)
    cfg = ModelConfig(num_layers=args.layers)
    ccfg = CompileConfig(enabled=args.compile != "off", backend=args.compile if args.compile != "off" else "inductor")
    handshake("env", parity_payload(args, ctx, cfg, ccfg), group=layout.group("world"), ranks=layout.ranks("world"),
              device=ctx.device)  # fmt: skip
    cfg.check_tp(tp)
    return layout, cfg, ccfg


def serve_mesh(ctx: RankContext, layout: ParallelLayout, rt: Runtime) -> dict[str, Any]:
    return lead(ctx, layout, rt) if ctx.rank == LEADER else follow(ctx, layout, rt)


def run(ctx: RankContext, args: argparse.Namespace) -> dict[str, Any]:
    layout, cfg, ccfg = prepare(ctx, args)
    if ctx.rank == DRIVER:
        return drive(ctx, layout, cfg, args)
    return serve_mesh(ctx, layout, Runtime(ctx, layout, cfg, ccfg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--recompute-every", type=int, default=2)
    parser.add_argument("--compile", default="off", choices=["off", "aot_eager", "inductor"])
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    return rank_main(args, lambda ctx: run(ctx, args), lambda summary: events.emit("run_done", **summary))


if __name__ == "__main__":
    raise SystemExit(main())
