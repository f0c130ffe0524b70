"""PP0: rank0 = stage 0 (build envelopes, decode results), rank1 = stage 1 (generator only).

    python -m engine.pp0 --depth 2 --chunks 16 --out DIR     # 2 ranks (launcher or torchrun)

Envelopes go 0 -> 1 and results 1 -> 0 point to point, both with v1 framing (results are
RESULT messages carrying `cache_epoch`, the IDs, `observed_generator_calls`, `tB_ms` and
`t_mesh_idle_ms`). rank0 is the single owner of both channels: one thread, one loop,
bounded by two queues —
  in flight  (sent, result not yet decoded)  <= D_in
  ready      (received, not yet decoded)     <= D_out
— and it sends envelope k+1 *before* decoding result k (possible from D_in = 2 on), which
is what lets stage 1 work while stage 0 decodes. The `serial` schedule (decode k, then send k+1) is the bug O-02
must recognise. A hard cut bumps `cache_epoch`; every result of an older epoch, in flight
or ready, is dropped — logged with both epochs and its IDs — and never decoded.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from engine import events, knobs
from engine.atomic_json import write_json
from engine.collectives import TPCollectives
from engine.compile import CompileConfig
from engine.config import ModelConfig
from engine.decoder import LatentDecoder
from engine.denoise import denoise_chunk
from engine.envelope import Action
from engine.errors import CallCountMismatch, PlanRejected
from engine.faults import FaultHooks
from engine.generator import CausalGenerator
from engine.layout import RankContext
from engine.overlap_metrics import summarise
from engine.parity import handshake
from engine.runtime import parity_payload, rank_main
from engine.stream import StreamBuilder, StreamConfig
from engine.transport import EnvelopeReceiver, EnvelopeSender, P2PChannel
from engine.watchdog import Watchdog

log = logging.getLogger("engine.pp0")
STAGE0, STAGE1 = 0, 1
DELAY_RESULT_S = 0.3  # OM-09's injected delay: long enough that the hard cut always comes first


@dataclass(frozen=True, kw_only=True)
class PP0Config:
    chunks: int  # chunks after the warmup chunk
    d_in: int  # envelopes in flight toward stage 1
    d_out: int  # results waiting for decode
    recompute: str  # "r1": off; "r0a": on, rank0 supplies context from its decode of chunk k-1
    schedule: str  # "healthy": send k+1 before decoding k; "serial": the bug (decode first)
    hard_cut_at: int  # chunk index that starts a new stream (-1: none)
    decoder_width: int  # stage 0's decode cost knob

    def __post_init__(self) -> None:
        if self.d_in < 1 or self.d_out < 1:
            raise ValueError(f"d_in={self.d_in} d_out={self.d_out} are invalid; queue bounds must be >= 1")
        if self.recompute not in ("r1", "r0a"):
            raise ValueError(f"recompute={self.recompute!r} is invalid; pick r1 or r0a")
        if self.schedule not in ("healthy", "serial"):
            raise ValueError(f"schedule={self.schedule!r} is invalid; pick healthy or serial")


def reencode(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """Stage 0's stand-in for a VAE encode of decoded frames: [B,F,3,4H,4W] -> [B,F,C,H,W]."""
    b, f = pixels.shape[:2]
    pooled = F.avg_pool2d(pixels.flatten(0, 1), 4)  # [B*F, 3, H, W]
    latents = torch.cat([pooled, pooled.mean(1, keepdim=True).expand(-1, channels - 3, -1, -1)], 1)
    return latents.unflatten(0, (b, f))


class Stage0:
    """rank0: the one owner of both channels while overlap is active."""

    def __init__(self, ctx: RankContext, cfg: ModelConfig, pcfg: PP0Config, group: Any, hooks: FaultHooks) -> None:
        self.cfg, self.pcfg, self.hooks = cfg, pcfg, hooks
        self.sender = EnvelopeSender(cfg=cfg, channel=P2PChannel(group=group, name="pp", peer=STAGE1),
                                     device=ctx.device)  # fmt: skip
        self.results = EnvelopeReceiver(
            cfg=cfg, channel=P2PChannel(group=group, name="pp_result", peer=STAGE1), device=ctx.device,
            rank=ctx.rank, watchdog=None, hooks=hooks, accept=frozenset({Action.RESULT}),
        )  # fmt: skip
        scfg = StreamConfig(chunks=pcfg.chunks, recompute_every=1 if pcfg.recompute == "r0a" else 0,
                            hard_cut_at=pcfg.hard_cut_at)  # fmt: skip
        self.builder = StreamBuilder(cfg, scfg, hooks)
        self.decoder = LatentDecoder(cfg, width=pcfg.decoder_width).to(ctx.device)
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
        prepared = self.sender.preflight(self.builder.request(k))  # a PreflightError ends the run: tests' bug
        t_a1 = time.monotonic()
        self.sender.send_header(prepared.header)
        self.sender.send_payload(prepared.meta, prepared.specs, prepared.tensors)
        self.builder.committed()
        nbytes = sum(t.numel() * t.element_size() for t in prepared.tensors)
        self.in_flight.append((k, prepared.header.cache_epoch, nbytes))
        self._flush_stale_ready()
        self.records[k] = {"tA0": t_a0, "tA1": t_a1, "tSend": time.monotonic(),
                           "cache_epoch": prepared.header.cache_epoch,
                           "in_flight_at_send": len(self.in_flight) + len(self.ready),
                           "ready_at_send": len(self.ready)}  # fmt: skip
        self._track()

    def _drop(self, k: int, epoch: int, where: str) -> None:
        record = {"chunk_index": k, "result_epoch": epoch, "current_epoch": self.sender.cache_epoch, "where": where}
        self.dropped.append(record)
        events.emit("stale_result_dropped", group="pp_result", **record)
        log.warning("dropped stale result chunk_index=%s cache_epoch=%s (current %s) from %s",
                    k, epoch, self.sender.cache_epoch, where)  # fmt: skip

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
        sent, pcfg = 0, self.pcfg
        while sent < pcfg.chunks or self.in_flight or self.ready:
            # An envelope stays "in flight toward the mesh" until its result is decoded, so with
            # D_in = 1 nothing new goes out while a result waits: the pipeline serialises.
            can_send = sent < pcfg.chunks and len(self.in_flight) + len(self.ready) < pcfg.d_in
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
        return {"records": {str(k): v for k, v in sorted(self.records.items())}, "max_depth": self.max_depth,
                "queued_bytes_peak": self.queued_bytes_peak, "dropped": self.dropped,
                "chunks_done": emitted}  # fmt: skip

    def _stream_position(self, k: int) -> int:
        """Where chunk k sits in its stream (a hard cut restarts at 0)."""
        return k - self.pcfg.hard_cut_at if 0 <= self.pcfg.hard_cut_at <= k else k


class Stage1:
    """rank1: receive, generate, return. Idle time is measured here, with no clock sync."""

    def __init__(self, ctx: RankContext, cfg: ModelConfig, group: Any, hooks: FaultHooks, compile_cfg: CompileConfig):
        self.ctx, self.cfg, self.hooks = ctx, cfg, hooks
        self.gen = CausalGenerator(cfg, comm=TPCollectives(group=None), tp_rank=0, device=ctx.device,
                                   compile_cfg=compile_cfg)  # fmt: skip
        self.watchdog = Watchdog(window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S"), rank=ctx.rank)
        self.receiver = EnvelopeReceiver(cfg=cfg, channel=P2PChannel(group=group, name="pp", peer=STAGE0),
                                         device=ctx.device, rank=ctx.rank, watchdog=self.watchdog, hooks=hooks)
        self.results = EnvelopeSender(cfg=cfg, channel=P2PChannel(group=group, name="pp_result", peer=STAGE0),
                                      device=ctx.device)  # fmt: skip

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
                plan = env.plan
                if plan.init_cache or plan.reset_kv_cache:
                    self.gen.reset_kv_cache()
                if plan.init_cache or plan.reset_crossattn_cache:
                    self.gen.reset_crossattn_cache()
                t_b0, before = time.monotonic(), self.gen.num_calls
                clean = denoise_chunk(
                    self.gen, conditioning=env.tensors["conditioning_embeds"],
                    denoising_steps=env.tensors["denoising_step_list"].tolist(),
                    current_start_frame=plan.current_start_frame, chunk_index=header.chunk_index,
                    base_seed=plan.base_seed, context_frames=env.tensors.pop("context_frames_override", None),
                    attention_bias=plan.kv_cache_attention_bias, initial_latents=env.tensors["latents"],
                )  # fmt: skip
                t_b1 = time.monotonic()
                calls = self.gen.num_calls - before
                if calls != plan.expected_generator_calls:
                    raise CallCountMismatch(f"stage 1 ran {calls} calls, plan says {plan.expected_generator_calls}")
                if self.hooks.fires("delay_result", rank=self.ctx.rank, chunk_index=header.chunk_index):
                    time.sleep(DELAY_RESULT_S)  # the injected fault itself: a slow result
                stats = {"observed_generator_calls": calls, "tB_ms": (t_b1 - t_b0) * 1e3,
                         "t_mesh_idle_ms": 0.0 if last_sent is None else (t_arrive - last_sent) * 1e3,
                         "tB0": t_b0, "tB1": t_b1}  # fmt: skip  # tB0/tB1: for the trace only
                prepared = self.results.prepare_result(chunk_index=header.chunk_index,
                                                       cache_epoch=header.cache_epoch, stats=stats,
                                                       tensors={"latents": clean})  # fmt: skip
                self.results.send_header(prepared.header)
                self.results.send_payload(prepared.meta, prepared.specs, prepared.tensors)
                last_sent = time.monotonic()
        finally:
            self.watchdog.close()


def run(ctx: RankContext, args: argparse.Namespace) -> dict[str, Any]:
    if ctx.world_size != 2:
        raise ValueError(f"PP0 runs on 2 ranks (stage 0 + stage 1), got world_size={ctx.world_size}")
    group = dist.new_group([STAGE0, STAGE1], timeout=datetime.timedelta(seconds=ctx.timeout_s))
    cfg = ModelConfig(num_layers=args.layers)
    ccfg = CompileConfig(enabled=args.compile != "off", backend=args.compile if args.compile != "off" else "inductor")
    handshake("env", parity_payload(args, ctx, cfg, ccfg), group=group, ranks=(STAGE0, STAGE1), device=ctx.device)
    hooks = FaultHooks.from_knobs()
    if ctx.rank == STAGE0:
        pcfg = PP0Config(chunks=args.chunks, d_in=args.d_in or args.depth, d_out=args.d_out or args.depth,
                         recompute=args.recompute, schedule=args.schedule, hard_cut_at=args.hard_cut_at,
                         decoder_width=args.decoder_width)  # fmt: skip
        out = Stage0(ctx, cfg, pcfg, group, hooks).run()
        out.update(config=pcfg.__dict__, summary=summarise(out["records"], warmup=2))
    else:
        out = Stage1(ctx, cfg, group, hooks, ccfg).run()
    out.update(rank=ctx.rank, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


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

    def write(out: dict[str, Any]) -> None:
        write_json(Path(args.out) / f"pp0-rank{out['rank']}.json", out)
        events.emit("run_done", rank=out["rank"], dropped=len(out.get("dropped", [])),
                    chunks_done=out.get("chunks_done"))  # fmt: skip

    return rank_main(args, lambda ctx: run(ctx, args), write)


if __name__ == "__main__":
    raise SystemExit(main())

