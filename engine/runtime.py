"""The TP inference runtime: rank0 drives a stream of chunks, all ranks generate in lockstep.

    python -m engine.runtime --chunks 6      # on every rank (launcher or torchrun)

Per rank: join → parity handshake (every parity knob, argument and config) → build the
generator shard → fingerprint check → warmup chunk (chunk_index=-1) → the stream.
Per chunk: rank0 preflights and sends the envelope; every rank then joins the
pre-generator agreement (one always-run all-gather: plan accepted?, planned call count,
input digest) → Phase B (the generator calls, counted) → fingerprint check every N
calls. While idle, rank0 sends NOOP heartbeats; workers run a watchdog.
Each EngineError ends the rank with its own exit code (engine.errors).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import signal
import sys
import threading
import time
from typing import Any, Callable

import torch
from tabulate import tabulate

from engine import events, knobs
from engine.collectives import CollectivePath, TPCollectives, all_gather_json, barrier
from engine.compile import CompileConfig
from engine.config import DistConfig, ModelConfig
from engine.decoder import LatentDecoder
from engine.denoise import denoise_chunk
from engine.envelope import Action, TensorSpec
from engine.errors import CallCountMismatch, DigestMismatch, EngineError, PeerLost, PlanRejected, PreflightError
from engine.faults import FaultHooks
from engine.generator import CausalGenerator
from engine.layout import ParallelLayout, RankContext
from engine.lifecycle import joined
from engine.model import resolve_attention
from engine.parity import diff_table, handshake
from engine.plan import PLAN_ID, GeneratorPlan
from engine.stream import StreamBuilder, StreamConfig
from engine.transport import BroadcastChannel, Envelope, EnvelopeReceiver, EnvelopeSender
from engine.tripwires import check_fingerprints, expected_fingerprints, input_digest, shard_fingerprint
from engine.watchdog import Watchdog

log = logging.getLogger("engine.runtime")
EXIT_USAGE = 2
DRIVER = 0  # global rank of the driver


class Runtime:
    """One rank's chunk executor; identical on every rank except for who sends."""

    def __init__(self, ctx: RankContext, layout: ParallelLayout, cfg: ModelConfig, compile_cfg: CompileConfig) -> None:
        self.ctx, self.cfg, self.layout = ctx, cfg, layout
        self.group, self.ranks = layout.group("tp"), layout.ranks("tp")
        self.hooks = FaultHooks.from_knobs()
        self.digest_on = knobs.read("COMPILE_GUARD_INPUT_DIGEST")
        self.fingerprint_every = knobs.read("COMPILE_GUARD_FINGERPRINT_EVERY")
        self.debug_sync = knobs.read("COMPILE_GUARD_DEBUG_SYNC")
        self.compile_cfg = compile_cfg
        try:
            path = CollectivePath(knobs.read("COMPILE_GUARD_COLLECTIVE_PATH"))
        except ValueError:
            raise ValueError(
                f"COMPILE_GUARD_COLLECTIVE_PATH={knobs.read('COMPILE_GUARD_COLLECTIVE_PATH')!r} is invalid;"
                f" pick one of {[p.value for p in CollectivePath]}"
            ) from None
        requested_attn = knobs.read("COMPILE_GUARD_ATTN_IMPL")
        attn = resolve_attention(requested_attn)
        if requested_attn == "auto" and self.hooks.fires("attn_auto_skew", rank=ctx.rank, chunk_index=-1):
            attn = "math"
        self.gen = CausalGenerator(
            cfg, comm=TPCollectives(group=self.group, path=path), tp_rank=layout.axis_rank("tp"),
            device=ctx.device, compile_cfg=compile_cfg, attn_impl=attn,
        )  # fmt: skip
        if self.hooks.fires("rank_graph_break", rank=ctx.rank, chunk_index=-1):
            self.gen.model.debug_print = True
        # Called on every rank after each chunk (the check's probes hook in here).
        self.after_chunk: Callable[[Envelope], None] | None = None
        self.rules = self.gen.model.init_rules()
        self.expected_fps = expected_fingerprints(self.gen.model, self.rules, seed=cfg.seed, tp_size=len(self.ranks))
        # time spent per concern; fingerprint_init_s is the one-off check, not sampling overhead
        self.timers = {"generator_s": 0.0, "digest_s": 0.0, "fingerprint_s": 0.0, "fingerprint_init_s": 0.0}
        self.fingerprint_checks = 0
        self.last_chunk_calls = 0  # generator calls of the last chunk (PP1's leader reports them)
        self._calls_at_last_check = 0
        self.check_fingerprints(reason="init")

    def check_fingerprints(self, *, reason: str) -> None:
        t0 = time.perf_counter()
        mine = shard_fingerprint(self.gen.model, self.rules)
        actual = all_gather_json(mine, group=self.group, device=self.ctx.device)
        self.timers["fingerprint_init_s" if reason == "init" else "fingerprint_s"] += time.perf_counter() - t0
        self.fingerprint_checks += 1
        self._calls_at_last_check = self.gen.num_calls
        try:
            check_fingerprints(actual, self.expected_fps, self.ranks)
        except EngineError:
            events.emit("fingerprint_mismatch", reason=reason, actual=actual, expected=self.expected_fps,
                        generator_calls=self.gen.num_calls)  # fmt: skip
            raise

    def agree(self, env: Envelope) -> None:
        """The pre-generator agreement: one always-run all-gather, before any generator collective."""
        k = env.header.chunk_index
        mine: dict[str, Any] = {
            "ok": env.rejection is None,
            "reason": env.rejection,
            "calls": None if env.plan is None else env.plan.expected_generator_calls,
        }
        if self.digest_on and k >= 0:  # warmup is excluded from digests
            t0 = time.perf_counter()
            mine["digest"] = input_digest(env.tensors)
            self.timers["digest_s"] += time.perf_counter() - t0
        ids = {**env.header.ids(), "group": "tp"}
        group = self.group
        if self.hooks.fires("wrong_group", rank=self.ctx.rank, chunk_index=k):
            group = self.layout.group("world")  # the injected bug: this call site is handed world_pg
        per_rank = all_gather_json(mine, group=self.layout.require(group, "tp", **ids), device=self.ctx.device)
        rejected = [[r, d["reason"]] for r, d in zip(self.ranks, per_rank, strict=True) if not d["ok"]]
        if rejected:
            raise PlanRejected(
                f"plan of call_id={ids['call_id']} chunk_index={k} rejected before Phase B by rank(s)"
                f" {[r for r, _ in rejected]}:\n{tabulate(rejected, headers=['rank', 'reason'])}"
            )
        if len({d["calls"] for d in per_rank}) != 1:
            raise CallCountMismatch(f"ranks plan different generator call counts {[d['calls'] for d in per_rank]}")
        if "digest" in mine:
            rows = diff_table([d["digest"] for d in per_rank], self.ranks)
            if rows:
                table = tabulate(rows, headers=["tensor", *(f"rank{r}" for r in self.ranks)])
                events.emit("digest_mismatch", tensors=[r[0] for r in rows], **ids)
                raise DigestMismatch(
                    f"input digest mismatch at call_id={ids['call_id']} chunk_index={k} cache_epoch="
                    f"{ids['cache_epoch']}: ranks would compute on different inputs\n{table}"
                )

    def run_chunk(self, env: Envelope) -> torch.Tensor:
        k, rank = env.header.chunk_index, self.ctx.rank
        if self.hooks.fires("perturb_input", rank=rank, chunk_index=k):
            env.tensors["latents"].add_(1e-3)
        if self.hooks.fires("mutate_weight", rank=rank, chunk_index=k):
            with torch.no_grad():
                self.gen.model.blocks[0].self_q.weight.view(-1)[0] += 1e-3
        self.agree(env)
        plan: GeneratorPlan = env.plan
        if plan.init_cache or plan.reset_kv_cache:
            self.gen.reset_kv_cache()
        if plan.init_cache or plan.reset_crossattn_cache:
            self.gen.reset_crossattn_cache()
        events.emit("commit", point="phase_b", group="tp", rank=rank, **env.header.ids())
        before, t0 = self.gen.num_calls, time.perf_counter()
        clean = denoise_chunk(
            self.gen,
            conditioning=env.tensors["conditioning_embeds"],
            denoising_steps=env.tensors["denoising_step_list"].tolist(),
            current_start_frame=plan.current_start_frame,
            chunk_index=k,
            base_seed=plan.base_seed,
            context_frames=env.tensors.pop("context_frames_override", None),  # consumed, never reused
            attention_bias=plan.kv_cache_attention_bias,
            initial_latents=env.tensors["latents"],
        )
        self.timers["generator_s"] += time.perf_counter() - t0
        calls = self.last_chunk_calls = self.gen.num_calls - before
        if calls != plan.expected_generator_calls:
            raise CallCountMismatch(
                f"rank {rank} ran {calls} generator calls for chunk_index={k},"
                f" plan says {plan.expected_generator_calls}"
            )
        if self.gen.num_calls - self._calls_at_last_check >= self.fingerprint_every:
            self.check_fingerprints(reason="periodic")
        if self.debug_sync:
            barrier(group=self.group)
        events.emit("chunk_done", rank=rank, calls=calls, **env.header.ids())
        if self.after_chunk is not None:
            self.after_chunk(env)
        return clean

    def effective_backend(self) -> dict[str, Any]:
        """The *resolved* choices (what `auto` became), for the effective-backend handshake."""
        return {
            "attn_impl": self.gen.model.attn_impl,
            "collective_path": self.gen.comm.effective_path(compiled=self.compile_cfg.enabled).value,
            "compile_backend": self.compile_cfg.backend if self.compile_cfg.enabled else "eager",
            "dtype": self.cfg.dtype,
            "device_type": self.ctx.device.type,
            "dist_backend": self.ctx.backend,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }


def drive(rt: Runtime, sender: EnvelopeSender, builder: StreamBuilder, args: argparse.Namespace) -> dict[str, Any]:
    """rank0: warmup, the stream, idle heartbeats, SHUTDOWN. Returns the run summary."""
    decoder = LatentDecoder(rt.cfg).to(rt.ctx.device)
    done, rejected, idle = [], [], threading.Event()
    for k in [-1, *range(args.chunks)]:
        try:
            prepared = sender.preflight(builder.request(k))
        except PreflightError as exc:  # nobody saw a header for it: the job goes on
            rejected.append({"chunk_index": k, "stage": exc.stage, "key_path": exc.key_path})
            continue
        sender.send_header(prepared.header)
        if rt.hooks.fires("kill_rank0_loop", rank=DRIVER, chunk_index=k):
            os.kill(os.getpid(), signal.SIGKILL)
        sender.send_payload(prepared.meta, prepared.specs, prepared.tensors)
        builder.committed()
        if rt.hooks.fires("adhoc_broadcast", rank=DRIVER, chunk_index=k):
            probe = torch.zeros(2, dtype=torch.int64, device=rt.ctx.device)  # "tell workers a shape"
            spec = TensorSpec(key="shape_probe", index=0, dtype="int64", shape=(2,))
            sender.send_tensor(spec, probe, manifest=prepared.specs)
        clean = rt.run_chunk(prepared.envelope())
        decoder(clean)  # rank0's decode stage: pixels for the client
        if k < 0:
            builder.restart(new_stream=False)
        else:
            builder.context(clean)
            done.append(k)
        if k == args.idle_after:
            t_end = time.monotonic() + args.idle_s
            while time.monotonic() < t_end:
                if rt.hooks.fires("kill_rank0_idle", rank=DRIVER, chunk_index=k):
                    os.kill(os.getpid(), signal.SIGKILL)
                if rt.hooks.fires("freeze_rank0_idle", rank=DRIVER, chunk_index=k):
                    os.kill(os.getpid(), signal.SIGSTOP)
                sender.control(Action.NOOP)
                idle.wait(knobs.read("COMPILE_GUARD_HEARTBEAT_S"))  # pacing heartbeats, not synchronising
    sender.control(Action.SHUTDOWN)
    return {"chunks_done": done, "rejected": rejected}


def follow(rt: Runtime, receiver: EnvelopeReceiver) -> dict[str, Any]:
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
        env = receiver.recv_envelope(header)
        rt.run_chunk(env)
        if header.chunk_index >= 0:
            done.append(header.chunk_index)


def parity_payload(args: argparse.Namespace, ctx: RankContext, cfg: ModelConfig, ccfg: CompileConfig) -> dict:
    payload = {f"env.{k}": v for k, v in knobs.parity_values().items()}
    payload.update({f"args.{k}": v for k, v in sorted(vars(args).items())})
    payload.update({f"model.{k}": v for k, v in dataclasses.asdict(cfg).items()})
    payload.update({f"compile.{k}": v for k, v in dataclasses.asdict(ccfg).items()})
    payload.update(
        {"torch": torch.__version__, "python": platform.python_version(), "dist_backend": ctx.backend,
         "device_type": ctx.device.type, "world_size": ctx.world_size}
    )  # fmt: skip
    return payload


def prepare(ctx: RankContext, args: argparse.Namespace) -> tuple[ParallelLayout, ModelConfig, CompileConfig]:
    """Groups, configs and the env parity handshake; semantic checks only after parity."""
    layout = ParallelLayout(ctx, tp=ctx.world_size)
    cfg = ModelConfig(num_layers=args.layers)
    compiled = args.compile != "off"
    ccfg = CompileConfig(enabled=compiled, backend=args.compile if compiled else "inductor")
    handshake("env", parity_payload(args, ctx, cfg, ccfg), group=layout.group("tp"), ranks=layout.ranks("tp"),
              device=ctx.device)  # fmt: skip
    # A value every rank shares can be refused together, after the handshake proved they share it.
    if knobs.read("COMPILE_GUARD_TP_PLAN") != PLAN_ID:
        plan_id = knobs.read("COMPILE_GUARD_TP_PLAN")
        raise ValueError(f"COMPILE_GUARD_TP_PLAN={plan_id!r} is not supported; this runtime runs {PLAN_ID!r}")
    if knobs.read("COMPILE_GUARD_PP_ENABLED"):
        raise ValueError("COMPILE_GUARD_PP_ENABLED=1 but this is the TP runtime; unset it or use the PP runtime")
    cfg.check_tp(ctx.world_size)
    return layout, cfg, ccfg


def serve(rt: Runtime, layout: ParallelLayout, args: argparse.Namespace) -> dict[str, Any]:
    """rank0 drives the stream, the others follow it; returns this rank's run summary."""
    ctx, cfg = rt.ctx, rt.cfg
    scfg = StreamConfig(chunks=args.chunks, recompute_every=args.recompute_every, hard_cut_at=args.hard_cut_at)
    channel = BroadcastChannel(group=layout.group("tp"), name="tp", src=DRIVER)
    common = {"cfg": cfg, "channel": channel, "device": ctx.device}
    t0 = time.perf_counter()
    if ctx.rank == DRIVER:
        summary = drive(rt, EnvelopeSender(**common), StreamBuilder(cfg, scfg, rt.hooks), args)
    else:
        watchdog = Watchdog(window_s=knobs.read("COMPILE_GUARD_WATCHDOG_S"), rank=ctx.rank)
        try:
            summary = follow(rt, EnvelopeReceiver(**common, rank=ctx.rank, watchdog=watchdog, hooks=rt.hooks))
        finally:
            watchdog.close()
    summary.update(rank=ctx.rank, wall_s=time.perf_counter() - t0, generator_calls=rt.gen.num_calls,
                   fingerprint_checks=rt.fingerprint_checks, **rt.timers)  # fmt: skip
    return summary


def run(ctx: RankContext, args: argparse.Namespace) -> dict[str, Any]:
    layout, cfg, ccfg = prepare(ctx, args)
    return serve(Runtime(ctx, layout, cfg, ccfg), layout, args)


def add_stream_args(parser: argparse.ArgumentParser) -> None:
    """The runtime's arguments, shared with programs built on it (compile_guard.check_rank)."""
    parser.add_argument("--chunks", type=int, default=4, help="chunks after the warmup chunk")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks (4 = serving shape)")
    parser.add_argument("--recompute-every", type=int, default=2, help="KV recompute every k-th chunk (0: never)")
    parser.add_argument("--hard-cut-at", type=int, default=-1, help="chunk index that starts a new stream")
    parser.add_argument("--idle-after", type=int, default=-1, help="idle (heartbeats) after this chunk")
    parser.add_argument("--idle-s", type=float, default=0.0, help="how long to idle")
    parser.add_argument("--compile", default="off", choices=["off", "eager", "aot_eager", "inductor"])
    parser.add_argument("--timeout-s", type=float, default=30.0, help="process-group timeout")


def _exit_code_of(exc: BaseException) -> int:
    """Log how a rank ends and return its exit code (EngineError codes; 2 for configuration)."""
    if isinstance(exc, EngineError):
        events.emit("fatal", error=type(exc).__name__, exit_code=exc.exit_code, message=str(exc).splitlines()[0])
        log.error("exiting with %s (%s): %s", exc.exit_code, type(exc).__name__, exc)
        return exc.exit_code
    log.error("configuration error: %s", exc)
    return EXIT_USAGE


def rank_main(
    args: argparse.Namespace, body: Callable[[RankContext], dict[str, Any]], done: Callable[[dict[str, Any]], None]
) -> int:
    """The life of a rank program: log setup, join, `body`, leave; the exit code says how it ended."""
    rank = knobs.read("RANK")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(1)
    try:
        with joined(DistConfig(timeout_s=args.timeout_s)) as ctx:
            try:
                result = body(ctx)
            except RuntimeError as exc:  # a collective failed underneath us: a peer died or timed out
                raise PeerLost(f"rank {ctx.rank}: collective failed: {exc}") from exc
        done(result)
        return 0
    except (EngineError, ValueError) as exc:
        return _exit_code_of(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stream_args(parser)
    args = parser.parse_args(argv)
    return rank_main(args, lambda ctx: run(ctx, args), lambda summary: events.emit("run_done", **summary))


if __name__ == "__main__":
    sys.exit(main())
