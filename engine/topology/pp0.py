"""PP0: rank0 = stage 0 (build envelopes, decode results), rank1 = stage 1 (generator only).

    torchrun --nproc-per-node=2 -m engine.topology.pp0 --depth 2 --chunks 16 --out DIR

Envelopes go 0 -> 1 and results 1 -> 0 point to point, both with v1 framing (results are
RESULT messages carrying `cache_epoch`, the IDs, `observed_generator_calls`, `tB_ms` and
`t_mesh_idle_ms`). rank0 is the single owner of both channels: one thread, one loop,
bounded by two queues —
  in flight  (sent, result not yet decoded)  <= D_in
  ready      (received, not yet decoded)     <= D_out
— and it sends envelope k+1 *before* decoding result k (possible from D_in = 2 on), which
is what lets stage 1 work while stage 0 decodes. The `serial` schedule (decode k, then send
k+1) is the bug the overlap classifier must recognise. A hard cut bumps `cache_epoch`; every
result of an older epoch, in flight or ready, is dropped — logged with both epochs and its
IDs — and never decoded.
"""

from __future__ import annotations

import argparse
import collections
import logging
import resource
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine import events, knobs
from engine.atomic_json import write_json
from engine.collectives import TPCollectives
from engine.compile import CompileConfig
from engine.config import ModelConfig
from engine.control.envelope import Action
from engine.control.parity import env_payload, handshake
from engine.control.stream import StreamBuilder
from engine.control.transport import EnvelopeReceiver, EnvelopeSender, P2PChannel
from engine.control.watchdog import Watchdog
from engine.errors import PlanRejected
from engine.hooks import Hooks, Point, at
from engine.layout import ParallelLayout, RankContext
from engine.model.decoder import LatentDecoder
from engine.model.generator import CausalGenerator
from engine.rank_process import leave, rank_main
from engine.runspec import PP0Spec, RunSpec
from engine.topology.driver import Driver
from engine.topology.executor import phase_b
from engine.topology.overlap_metrics import summarise

log = logging.getLogger("engine.pp0")
STAGE0, STAGE1 = 0, 1


def reencode(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """Stage 0's stand-in for a VAE encode of decoded frames: [B,F,3,4H,4W] -> [B,F,C,H,W]."""
    b, f = pixels.shape[:2]
    pooled = F.avg_pool2d(pixels.flatten(0, 1), 4)  # [B*F, 3, H, W]
    latents = torch.cat([pooled, pooled.mean(1, keepdim=True).expand(-1, channels - 3, -1, -1)], 1)
    return latents.unflatten(0, (b, f))


class Stage0:
    """rank0: the one owner of both channels while overlap is active."""

    def __init__(self, ctx: RankContext, cfg: ModelConfig, spec: RunSpec, group: Any, hooks: Hooks) -> None:
        self.cfg, self.spec, self.pcfg, self.hooks = cfg, spec, spec.pp0, hooks
        self.sender = EnvelopeSender(
            cfg=cfg, channel=P2PChannel(group=group, name="pp", peer=STAGE1), device=ctx.device
        )
        self.results = EnvelopeReceiver(
            cfg=cfg,
            channel=P2PChannel(group=group, name="pp_result", peer=STAGE1),
            device=ctx.device,
            rank=ctx.rank,
            watchdog=None,
            hooks=hooks,
            accept=frozenset({Action.RESULT}),
        )
        self.builder = StreamBuilder(cfg, spec.stream_config(), hooks, rank=ctx.rank)
        # the shared drive machinery (request, preflight, commit); the pipelined schedule is this class's
        self.driver = Driver(sender=self.sender, builder=self.builder, hooks=hooks, rank=ctx.rank)
        self.decoder = LatentDecoder(cfg, width=spec.pp0.decoder_width).to(ctx.device)
        self.records: dict[int, dict[str, Any]] = {}
        self.in_flight: collections.deque = collections.deque()  # (chunk, epoch, bytes) sent, not received
        self.ready: collections.deque = collections.deque()  # (chunk, epoch, latents) received, not decoded
        self.max_depth = {"in_flight": 0, "ready": 0}
        self.queued_bytes_peak = 0
        self.dropped: list[dict[str, Any]] = []
        self.last_emitted = -1  # the last chunk decoded (R0a: the next envelope's context)

    def _track(self) -> None:
        self.max_depth["in_flight"] = max(self.max_depth["in_flight"], len(self.in_flight) + len(self.ready))
        self.max_depth["ready"] = max(self.max_depth["ready"], len(self.ready))
        outstanding = len(self.in_flight) + len(self.ready)
        assert outstanding <= self.pcfg.d_in and len(self.ready) <= self.pcfg.d_out, self.max_depth
        queued = sum(n for *_, n in self.in_flight) + sum(t.numel() * t.element_size() for *_, t in self.ready)
        self.queued_bytes_peak = max(self.queued_bytes_peak, queued)

    def _send(self, k: int) -> None:
        t_a0 = time.monotonic()
        prepared = self.driver.prepare(k)  # a PreflightError ends the run: tests' bug
        t_a1 = time.monotonic()
        self.driver.commit(k, prepared)
        nbytes = sum(t.numel() * t.element_size() for t in prepared.tensors)
        self.in_flight.append((k, prepared.header.cache_epoch, nbytes))
        self._flush_stale_ready()
        self.records[k] = {
            "tA0": t_a0,
            "tA1": t_a1,
            "tSend": time.monotonic(),
            "cache_epoch": prepared.header.cache_epoch,
            "in_flight_at_send": len(self.in_flight) + len(self.ready),
            "ready_at_send": len(self.ready),
        }
        self._track()

    def _drop(self, k: int, epoch: int, where: str) -> None:
        record = {"chunk_index": k, "result_epoch": epoch, "current_epoch": self.sender.cache_epoch, "where": where}
        self.dropped.append(record)
        events.emit("stale_result_dropped", group="pp_result", **record)
        log.warning(
            "dropped stale result chunk_index=%s cache_epoch=%s (current %s) from %s",
            k,
            epoch,
            self.sender.cache_epoch,
            where,
        )

    def _flush_stale_ready(self) -> None:
        while self.ready and self.ready[0][1] != self.sender.cache_epoch:
            k, epoch, _ = self.ready.popleft()
            self._drop(k, epoch, "ready queue")

    def _recv(self) -> None:
        header = self.results.recv_header()
        stats, tensors = self.results.recv_result(header)
        k, epoch, _ = self.in_flight.popleft()
        assert (k, epoch) == (header.chunk_index, header.cache_epoch), (k, epoch, header)
        if epoch != self.sender.cache_epoch:
            self._drop(k, epoch, "in flight")  # arrived after a hard cut: never decoded
            return
        self.records[k].update(tRecv=time.monotonic(), **stats)
        self.ready.append((k, epoch, tensors["latents"]))
        self._track()

    def _decode(self) -> None:
        k, _, latents = self.ready.popleft()
        t_dec0 = time.monotonic()
        pixels = self.decoder(latents)
        if k >= 0:
            clean = reencode(pixels, self.cfg.latent_channels) if self.pcfg.recompute == "r0a" else latents
            self.builder.context(clean)
            self.last_emitted = k
        self.records[k].update(tDec0=t_dec0, tEmit=time.monotonic())
        events.emit("chunk_emitted", chunk_index=k, cache_epoch=self.sender.cache_epoch)

    def run(self) -> dict[str, Any]:
        # Warmup (-1) goes through the same pipe, alone: stage 1 builds and warms its caches.
        self._send(-1)
        self._recv()
        self._decode()
        self.builder.restart(new_stream=False)
        sent, pcfg, chunks = 0, self.pcfg, self.spec.chunks
        while sent < chunks or self.in_flight or self.ready:
            # An envelope stays "in flight toward the mesh" until its result is decoded, so with
            # D_in = 1 nothing new goes out while a result waits: the pipeline serialises.
            can_send = sent < chunks and len(self.in_flight) + len(self.ready) < pcfg.d_in
            if pcfg.recompute == "r0a" and self._stream_position(sent) > 0 and self.last_emitted != sent - 1:
                can_send = False  # R0a: envelope k carries rank0's decode of chunk k-1, so it waits for it
            if pcfg.schedule == "serial" and (self.in_flight or self.ready):
                can_send = False  # the bug: nothing new goes out until the last result is decoded
            if can_send:
                self._send(sent)
                sent += 1
            elif self.ready:
                self._decode()  # frees a slot: the next envelope goes out before the next wait
            else:
                assert self.in_flight, "scheduler stalled: nothing to send, receive or decode"
                self._recv()
        self.sender.control(Action.SHUTDOWN)
        self.sender.channel.drain()
        emitted = sorted(k for k, r in self.records.items() if k >= 0 and "tEmit" in r)
        return {
            "records": {str(k): v for k, v in sorted(self.records.items())},
            "max_depth": self.max_depth,
            "queued_bytes_peak": self.queued_bytes_peak,
            "dropped": self.dropped,
            "chunks_done": emitted,
        }

    def _stream_position(self, k: int) -> int:
        """Where chunk k sits in its stream (a hard cut restarts at 0)."""
        cut = self.spec.hard_cut_at
        return k - cut if 0 <= cut <= k else k


class Stage1:
    """rank1: receive, generate, return. Idle time is measured here, with no clock sync."""

    def __init__(self, ctx: RankContext, cfg: ModelConfig, group: Any, hooks: Hooks, compile_cfg: CompileConfig):
        self.ctx, self.cfg, self.hooks = ctx, cfg, hooks
        self.gen = CausalGenerator(
            cfg, comm=TPCollectives(group=None), tp_rank=0, device=ctx.device, compile_cfg=compile_cfg
        )
        self.watchdog = Watchdog(
            window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S"), rank=ctx.rank, exit_status=ctx.exit_status
        )
        self.receiver = EnvelopeReceiver(
            cfg=cfg,
            channel=P2PChannel(group=group, name="pp", peer=STAGE0),
            device=ctx.device,
            rank=ctx.rank,
            watchdog=self.watchdog,
            hooks=hooks,
        )
        self.results = EnvelopeSender(
            cfg=cfg, channel=P2PChannel(group=group, name="pp_result", peer=STAGE0), device=ctx.device
        )

    def run(self) -> dict[str, Any]:
        last_sent: float | None = None
        try:
            while True:
                header = self.receiver.recv_header()
                if header.action is Action.SHUTDOWN:
                    self.results.channel.drain()
                    return {"generator_calls": self.gen.num_calls}
                if header.action is not Action.INFER:
                    continue
                t_arrive = time.monotonic()
                env = self.receiver.recv_envelope(header)
                if env.rejection:
                    raise PlanRejected(f"stage 1 rejects chunk_index={header.chunk_index}: {env.rejection}")
                t_b0 = time.monotonic()
                clean, calls = phase_b(
                    self.gen, env.plan, env.tensors, chunk_index=header.chunk_index, rank=self.ctx.rank
                )
                t_b1 = time.monotonic()
                at(self.hooks, Point.RESULT_READY, rank=self.ctx.rank, chunk_index=header.chunk_index)
                stats = {
                    "observed_generator_calls": calls,
                    "tB_ms": (t_b1 - t_b0) * 1e3,
                    "t_mesh_idle_ms": 0.0 if last_sent is None else (t_arrive - last_sent) * 1e3,
                    "tB0": t_b0,
                    "tB1": t_b1,
                }
                prepared = self.results.prepare_result(
                    chunk_index=header.chunk_index,
                    cache_epoch=header.cache_epoch,
                    stats=stats,
                    tensors={"latents": clean},
                )
                self.results.send_header(prepared.header)
                self.results.send_payload(prepared.meta, prepared.specs, prepared.tensors)
                last_sent = time.monotonic()
        finally:
            self.watchdog.close()


def run(ctx: RankContext, spec: RunSpec, hooks: Hooks) -> dict[str, Any]:
    layout = ParallelLayout(ctx, tp=1, pp=2)  # one rank per stage; the stages meet in the pp group
    group, ranks = layout.group("pp"), layout.ranks("pp")
    cfg, ccfg = spec.model_config(), spec.compile_config()
    handshake("env", env_payload(spec, ctx, model=cfg, compile=ccfg), group=group, ranks=ranks, device=ctx.device)
    if ctx.rank == STAGE0:
        out = Stage0(ctx, cfg, spec, group, hooks).run()
        config = {"chunks": spec.chunks, "hard_cut_at": spec.hard_cut_at, **spec.pp0.__dict__}
        out.update(config=config, summary=summarise(out["records"], warmup=2))
    else:
        out = Stage1(ctx, cfg, group, hooks, ccfg).run()
    out.update(rank=ctx.rank, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def write_result(out_dir: Path, out: dict[str, Any]) -> None:
    """Each rank's run record as pp0-rank{r}.json (the overlap command reads them)."""
    write_json(out_dir / f"pp0-rank{out['rank']}.json", out)
    events.emit("run_done", rank=out["rank"], dropped=len(out.get("dropped", [])), chunks_done=out.get("chunks_done"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--depth", type=int, default=2, help="D_in = D_out = depth, unless set apart")
    parser.add_argument("--d-in", type=int, default=None)
    parser.add_argument("--d-out", type=int, default=None)
    parser.add_argument("--recompute", default="r1", choices=["r1", "r0a"])
    parser.add_argument("--schedule", default="healthy", choices=["healthy", "serial"])
    parser.add_argument("--hard-cut-at", type=int, default=-1)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--decoder-width", type=int, default=192, help="stage 0 decode cost (192: ~20 ms)")
    parser.add_argument("--compile", default="off", choices=["off", "aot_eager", "inductor"])
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--out", required=True, help="directory: pp0-rank{r}.json")
    args = parser.parse_args(argv)
    pp0 = PP0Spec(
        d_in=args.d_in or args.depth,
        d_out=args.d_out or args.depth,
        recompute=args.recompute,
        schedule=args.schedule,
        decoder_width=args.decoder_width,
    )
    spec = RunSpec(
        name="pp0",
        topology="pp0",
        nprocs=2,
        compile=args.compile,
        layers=args.layers,
        chunks=args.chunks,
        hard_cut_at=args.hard_cut_at,
        timeout_s=args.timeout_s,
        pp0=pp0,
    )
    return rank_main(
        spec.dist_config(), lambda ctx: run(ctx, spec, Hooks()), lambda out: write_result(Path(args.out), out)
    )


if __name__ == "__main__":
    leave(main())
