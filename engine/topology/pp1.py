"""PP1: rank0 out of the mesh; ranks 1..N form `mesh_pg` with TP inside; rank1 leads it.

    torchrun --nproc-per-node=3 -m engine.topology.pp1 --chunks 4      # 1 + N ranks (3 here: rank0 + a TP=2 mesh)

rank0 builds envelopes (the same preflight) and sends them to the leader point to point;
it never enters a mesh collective. The leader receives, validates fully, and only then
broadcasts the envelope inside `mesh_pg` — its own commitment point, logged with
`group=mesh_pg`. A plan the leader rejects is never broadcast: the leader sends the
terminal ERROR action (with a reason code) to the mesh, so non-leaders exit cleanly, and
to rank0, then exits. Every mesh collective goes through the layout's group check, so a
collective handed `world_pg` where `mesh_pg` is expected stops before the backend call;
the leader then tells rank0. Mesh ranks agree on the planned call count before
Phase B (FM-02). Watchdogs: non-leaders on the mesh broadcast, the leader on rank0's
envelopes, rank0 on results.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch

from engine import events, knobs
from engine.config import ModelConfig
from engine.control.envelope import Action, Header, Reason
from engine.control.parity import env_payload, handshake
from engine.control.stream import StreamBuilder
from engine.control.transport import (
    BroadcastChannel,
    ChunkRequest,
    EnvelopeReceiver,
    EnvelopeSender,
    P2PChannel,
    Prepared,
)
from engine.control.watchdog import Watchdog
from engine.errors import CallCountMismatch, EngineError, PlanRejected, TerminatedByPeer, WrongGroup
from engine.hooks import Hooks
from engine.layout import ParallelLayout, RankContext
from engine.model.decoder import LatentDecoder
from engine.rank_process import leave, run_topology
from engine.runspec import RunSpec
from engine.topology import stages
from engine.topology.driver import Driver
from engine.topology.executor import ChunkExecutor

log = logging.getLogger("engine.pp1")
DRIVER, LEADER = 0, 1
REASONS = {PlanRejected: Reason.PLAN_REJECTED, WrongGroup: Reason.WRONG_GROUP, CallCountMismatch: Reason.CALL_COUNT}


def _terminal(sender: EnvelopeSender, reason: Reason, *, chunk_index: int) -> None:
    header = Header(
        action=Action.ERROR,
        call_id=sender.next_call_id(),
        chunk_index=chunk_index,
        cache_epoch=sender.cache_epoch,
        control_epoch=sender.control_epoch,
        reason=reason,
    )
    events.emit("terminal_broadcast", reason=reason.name, group=sender.group_name, chunk_index=chunk_index)
    sender.send_header(header)


WARMUP_RESULT_S = 300.0  # how long rank0 waits for the warmup chunk's result


def drive(ctx: RankContext, layout: ParallelLayout, cfg: ModelConfig, spec: RunSpec, hooks: Hooks) -> dict[str, Any]:
    """rank0: the shared drive loop, with the leader producing each chunk (or its ERROR)."""
    world = layout.group("world")
    sender = EnvelopeSender(cfg=cfg, channel=P2PChannel(group=world, name="world_pg", peer=LEADER), device=ctx.device)
    watchdog = Watchdog(
        window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S") * 4, rank=ctx.rank, exit_status=ctx.exit_status
    )  # covers a chunk
    results = EnvelopeReceiver(
        cfg=cfg,
        channel=P2PChannel(group=world, name="world_pg", peer=LEADER),
        device=ctx.device,
        rank=ctx.rank,
        watchdog=watchdog,
        hooks=hooks,
        accept=frozenset({Action.RESULT, Action.ERROR}),
    )

    def from_leader(k: int, _prepared: Prepared) -> torch.Tensor:
        # The warmup result carries the mesh's first compile (a cold inductor compile: tens of seconds on a
        # loaded small runner, minutes for a big model); a frozen mesh then meets the run's deadline instead.
        header = results.recv_header(window_s=WARMUP_RESULT_S if k < 0 else None)
        if header.action is Action.ERROR:
            raise TerminatedByPeer(
                f"the mesh leader stopped the job at chunk_index={header.chunk_index}:"
                f" {header.reason.name}; see rank {LEADER}'s log"
            )
        _stats, tensors = results.recv_result(header)
        return tensors["latents"]

    driver = Driver(
        sender=sender,
        builder=StreamBuilder(cfg, spec.stream_config(), hooks),
        hooks=hooks,
        rank=ctx.rank,
        decoder=LatentDecoder(cfg).to(ctx.device),
    )
    try:
        summary = driver.run(chunks=spec.chunks, produce=from_leader, idle_after=spec.idle_after, idle_s=spec.idle_s)
        sender.channel.drain()
    finally:
        watchdog.close()
    return summary


def lead(ctx: RankContext, layout: ParallelLayout, ex: ChunkExecutor) -> dict[str, Any]:
    """rank1: receive from rank0, validate, broadcast to the mesh, generate, return the result."""
    world, mesh = layout.group("world"), layout.group("tp")
    watchdog = Watchdog(window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S"), rank=ctx.rank, exit_status=ctx.exit_status)
    inbox = EnvelopeReceiver(
        cfg=ex.cfg,
        channel=P2PChannel(group=world, name="world_pg", peer=DRIVER),
        device=ctx.device,
        rank=ctx.rank,
        watchdog=watchdog,
        hooks=ex.hooks,
    )
    to_mesh = EnvelopeSender(
        cfg=ex.cfg, channel=BroadcastChannel(group=mesh, name="mesh_pg", src=LEADER), device=ctx.device
    )
    to_driver = EnvelopeSender(
        cfg=ex.cfg, channel=P2PChannel(group=world, name="world_pg", peer=DRIVER), device=ctx.device
    )
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
            clean = ex.run_chunk(prepared.envelope())
            result = to_driver.prepare_result(
                chunk_index=k,
                cache_epoch=header.cache_epoch,
                stats={"observed_generator_calls": ex.last_chunk_calls},
                tensors={"latents": clean},
            )
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


def follow(ctx: RankContext, layout: ParallelLayout, ex: ChunkExecutor) -> dict[str, Any]:
    """ranks 2..N: receive the leader's broadcast, generate in lockstep."""
    watchdog = Watchdog(window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S"), rank=ctx.rank, exit_status=ctx.exit_status)
    inbox = EnvelopeReceiver(
        cfg=ex.cfg,
        channel=BroadcastChannel(group=layout.group("tp"), name="mesh_pg", src=LEADER),
        device=ctx.device,
        rank=ctx.rank,
        watchdog=watchdog,
        hooks=ex.hooks,
    )
    done = []
    try:
        while True:
            header = inbox.recv_header()
            if header.action is Action.SHUTDOWN:
                return {"chunks_done": done}
            if header.action is Action.ERROR:
                raise TerminatedByPeer(
                    f"rank {ctx.rank}: the leader ended the job at chunk_index="
                    f"{header.chunk_index}: {header.reason.name}"
                )
            if header.action is Action.INFER:
                ex.run_chunk(inbox.recv_envelope(header))
                if header.chunk_index >= 0:
                    done.append(header.chunk_index)
    finally:
        watchdog.close()


def prepare(ctx: RankContext, spec: RunSpec) -> stages.Prepared:
    """Stage 1: world_pg + mesh_pg, configs, and the env parity handshake over the whole world. The symmetric
    group is the mesh (the driver, out of it, compiles nothing)."""
    tp = ctx.world_size - 1
    layout = ParallelLayout(ctx, tp=tp, driver_out_of_mesh=True)
    cfg, ccfg = spec.model_config(), spec.compile_config()
    payload = env_payload(spec, ctx, model=cfg, compile=ccfg)
    handshake("env", payload, group=layout.group("world"), ranks=layout.ranks("world"), device=ctx.device)
    cfg.check_tp(tp)
    mesh = ctx.rank != DRIVER  # the driver is in no TP group
    return stages.Prepared(
        ctx=ctx,
        layout=layout,
        cfg=cfg,
        ccfg=ccfg,
        role=stages.MESH if mesh else stages.DRIVER,
        group=layout.group("tp") if mesh else None,
        ranks=layout.ranks("tp") if mesh else (),
        builder=lambda p, hooks: build(p, spec, hooks),
    )


def build(prepared: stages.Prepared, spec: RunSpec, hooks: Hooks) -> stages.Built:
    """Stage 2: the driver builds its request stream; a mesh rank its generator shard (the leader leads)."""
    ctx, layout = prepared.ctx, prepared.layout
    if prepared.role == stages.DRIVER:
        return stages.Built(
            role=stages.DRIVER,
            region=None,
            effective_backend={},
            serve=lambda: drive(ctx, layout, prepared.cfg, spec, hooks),
        )
    ex = ChunkExecutor(ctx, layout, prepared.cfg, prepared.ccfg, hooks)
    serve = (lambda: lead(ctx, layout, ex)) if ctx.rank == LEADER else (lambda: follow(ctx, layout, ex))
    return stages.Built(
        role=stages.MESH,
        region=ex.gen.region,
        effective_backend=ex.effective_backend(),
        serve=stages.serve_counted(serve, ex),
    )


def run(ctx: RankContext, spec: RunSpec, hooks: Hooks) -> dict[str, Any]:
    return prepare(ctx, spec).build(hooks).serve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--recompute-every", type=int, default=2)
    parser.add_argument("--compile", default="off", choices=["off", "aot_eager", "inductor"])
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    spec = RunSpec(
        name="pp1",
        topology="pp1",
        nprocs=knobs.read("WORLD_SIZE") or 3,
        compile=args.compile,
        layers=args.layers,
        chunks=args.chunks,
        recompute_every=args.recompute_every,
        timeout_s=args.timeout_s,
    )
    return run_topology(spec, run)


if __name__ == "__main__":
    leave(main())
