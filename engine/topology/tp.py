"""TP: every rank in one TP group; rank0 drives a stream of chunks, all ranks generate in lockstep.

    torchrun --nproc-per-node=2 -m engine.topology.tp --chunks 6

Per rank: join → env parity handshake (every parity knob, the run spec and its configs) →
build the generator shard → fingerprint check → warmup chunk (chunk_index=-1) → the stream.
Per chunk: rank0 preflights and sends the envelope (engine.topology.driver); every rank then
runs the chunk executor (engine.topology.executor): the pre-generator agreement, Phase B,
fingerprints every N calls. While idle, rank0 sends NOOP heartbeats; workers run a watchdog.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from engine import knobs
from engine.control.envelope import Action
from engine.control.parity import env_payload, handshake
from engine.control.plan import PLAN_ID
from engine.control.stream import StreamBuilder
from engine.control.transport import BroadcastChannel, EnvelopeReceiver, EnvelopeSender
from engine.control.watchdog import Watchdog
from engine.errors import ConfigError, PlanRejected
from engine.hooks import Hooks
from engine.layout import ParallelLayout, RankContext
from engine.model.decoder import LatentDecoder
from engine.rank_process import leave, run_topology
from engine.runspec import RunSpec
from engine.topology.driver import Driver
from engine.topology.executor import ChunkExecutor
from engine.topology.stages import MESH, Built, Prepared, serve_counted

DRIVER = 0  # global rank of the driver


def prepare(ctx: RankContext, spec: RunSpec) -> Prepared:
    """Stage 1: groups, configs and the env parity handshake; semantic checks only after parity."""
    layout = ParallelLayout(ctx, tp=ctx.world_size)
    cfg, ccfg = spec.model_config(), spec.compile_config()
    payload = env_payload(spec, ctx, model=cfg, compile=ccfg)
    handshake("env", payload, group=layout.group("tp"), ranks=layout.ranks("tp"), device=ctx.device)
    # A value every rank shares can be refused together, after the handshake proved they share it.
    if knobs.read("COMPILE_GUARD_TP_PLAN") != PLAN_ID:
        plan_id = knobs.read("COMPILE_GUARD_TP_PLAN")
        raise ConfigError(f"COMPILE_GUARD_TP_PLAN={plan_id!r} is not supported; this runtime runs {PLAN_ID!r}")
    if knobs.read("COMPILE_GUARD_PP_ENABLED"):
        raise ConfigError("COMPILE_GUARD_PP_ENABLED=1 but this is the TP runtime; unset it or use the PP runtime")
    cfg.check_tp(ctx.world_size)
    return Prepared(
        ctx=ctx,
        layout=layout,
        cfg=cfg,
        ccfg=ccfg,
        role=MESH,
        group=layout.group("tp"),
        ranks=layout.ranks("tp"),
        builder=lambda p, hooks: build(p, spec, hooks),
    )


def build(prepared: Prepared, spec: RunSpec, hooks: Hooks) -> Built:
    """Stage 2: the generator shard (its fingerprints checked); rank0 drives, the others follow."""
    ex = ChunkExecutor(prepared.ctx, prepared.layout, prepared.cfg, prepared.ccfg, hooks)
    return Built(
        role=MESH,
        region=ex.gen.region,
        effective_backend=ex.effective_backend(),
        serve=serve_counted(lambda: serve(ex, prepared.layout, spec, hooks), ex),
    )


def follow(ex: ChunkExecutor, receiver: EnvelopeReceiver) -> dict[str, Any]:
    """worker: run every INFER until SHUTDOWN."""
    done = []
    while True:
        header = receiver.recv_header()
        if header.action is Action.NOOP:
            continue
        if header.action is Action.SHUTDOWN:
            return {"chunks_done": done}
        if header.action is Action.ERROR:
            raise PlanRejected(f"driver sent ERROR at call_id={header.call_id}: it is going down")
        ex.run_chunk(receiver.recv_envelope(header))
        if header.chunk_index >= 0:
            done.append(header.chunk_index)


def serve(ex: ChunkExecutor, layout: ParallelLayout, spec: RunSpec, hooks: Hooks) -> dict[str, Any]:
    """rank0 drives the stream, the others follow it; returns this rank's run summary."""
    ctx, cfg = ex.ctx, ex.cfg
    channel = BroadcastChannel(group=layout.group("tp"), name="tp", src=DRIVER)
    common = {"cfg": cfg, "channel": channel, "device": ctx.device}
    t0 = time.perf_counter()
    if ctx.rank == DRIVER:
        driver = Driver(
            sender=EnvelopeSender(**common),
            builder=StreamBuilder(cfg, spec.stream_config(), hooks),
            hooks=hooks,
            rank=ctx.rank,
            decoder=LatentDecoder(cfg).to(ctx.device),
        )
        summary = driver.run(
            chunks=spec.chunks,
            produce=lambda _k, prepared: ex.run_chunk(prepared.envelope()),
            idle_after=spec.idle_after,
            idle_s=spec.idle_s,
        )
    else:
        watchdog = Watchdog(window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S"), rank=ctx.rank, exit_status=ctx.exit_status)
        try:
            summary = follow(ex, EnvelopeReceiver(**common, rank=ctx.rank, watchdog=watchdog, hooks=hooks))
        finally:
            watchdog.close()
    summary.update(
        rank=ctx.rank,
        wall_s=time.perf_counter() - t0,
        generator_calls=ex.gen.num_calls,
        fingerprint_checks=ex.fingerprint_checks,
        **ex.timers,
    )
    return summary


def run(ctx: RankContext, spec: RunSpec, hooks: Hooks) -> dict[str, Any]:
    return prepare(ctx, spec).build(hooks).serve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4, help="chunks after the warmup chunk")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks (4 = serving shape)")
    parser.add_argument("--recompute-every", type=int, default=2, help="KV recompute every k-th chunk (0: never)")
    parser.add_argument("--hard-cut-at", type=int, default=-1, help="chunk index that starts a new stream")
    parser.add_argument("--idle-after", type=int, default=-1, help="idle (heartbeats) after this chunk")
    parser.add_argument("--idle-s", type=float, default=0.0, help="how long to idle")
    parser.add_argument("--compile", default="off", choices=["off", "eager", "aot_eager", "inductor"])
    parser.add_argument("--timeout-s", type=float, default=30.0, help="process-group timeout")
    args = parser.parse_args(argv)
    spec = RunSpec(
        name="tp",
        topology="tp",
        nprocs=knobs.read("WORLD_SIZE") or 1,
        compile=args.compile,
        layers=args.layers,
        chunks=args.chunks,
        recompute_every=args.recompute_every,
        hard_cut_at=args.hard_cut_at,
        idle_after=args.idle_after,
        idle_s=args.idle_s,
        timeout_s=args.timeout_s,
    )
    return run_topology(spec, run)


if __name__ == "__main__":
    leave(main())
