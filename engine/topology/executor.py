"""One rank's chunk executor, shared by every topology.

`phase_b` is Phase B itself — cache resets, the denoise loop, the call count against the
plan — and is the only place a chunk is generated (TP ranks, PP1 mesh ranks and PP0's
stage 1 all call it). `ChunkExecutor` wraps it for a TP group: the pre-generator agreement
(one always-run all-gather: plan accepted?, planned call count, input digest) before it,
the periodic shard fingerprints after it.
"""

from __future__ import annotations

import logging
import platform
import time
from typing import Any

import torch
from tabulate import tabulate

from engine import events, knobs
from engine.collectives import CollectivePath, TPCollectives, all_gather_json, barrier
from engine.compile import CompileConfig
from engine.config import ModelConfig
from engine.control.parity import diff_table
from engine.control.plan import GeneratorPlan
from engine.control.transport import Envelope
from engine.control.tripwires import check_fingerprints, expected_fingerprints, input_digest, shard_fingerprint
from engine.errors import CallCountMismatch, ConfigError, DigestMismatch, EngineError, PlanRejected
from engine.hooks import Hooks, Point, at
from engine.layout import ParallelLayout, RankContext
from engine.model.denoise import denoise_chunk
from engine.model.generator import CausalGenerator
from engine.model.transformer import resolve_attention

log = logging.getLogger("engine.executor")


def phase_b(
    gen: CausalGenerator, plan: GeneratorPlan, tensors: dict[str, torch.Tensor], *, chunk_index: int, rank: int
) -> tuple[torch.Tensor, int]:
    """Generate one chunk on this rank; (clean latents, generator calls). Consumes the context override."""
    if plan.init_cache or plan.reset_kv_cache:
        gen.reset_kv_cache()
    if plan.init_cache or plan.reset_crossattn_cache:
        gen.reset_crossattn_cache()
    before = gen.num_calls
    clean = denoise_chunk(
        gen,
        conditioning=tensors["conditioning_embeds"],
        denoising_steps=tensors["denoising_step_list"].tolist(),
        current_start_frame=plan.current_start_frame,
        chunk_index=chunk_index,
        base_seed=plan.base_seed,
        context_frames=tensors.pop("context_frames_override", None),  # consumed, never reused
        attention_bias=plan.kv_cache_attention_bias,
        initial_latents=tensors["latents"],
    )
    calls = gen.num_calls - before
    if calls != plan.expected_generator_calls:
        raise CallCountMismatch(
            f"rank {rank} ran {calls} generator calls for chunk_index={chunk_index},"
            f" plan says {plan.expected_generator_calls}"
        )
    return clean, calls


def collective_path() -> CollectivePath:
    text = knobs.read("COMPILE_GUARD_COLLECTIVE_PATH")
    try:
        return CollectivePath(text)
    except ValueError:
        raise ConfigError(
            f"COMPILE_GUARD_COLLECTIVE_PATH={text!r} is invalid; pick one of {[p.value for p in CollectivePath]}"
        ) from None


def build_generator(
    ctx: RankContext, cfg: ModelConfig, ccfg: CompileConfig, *, group: Any, tp_rank: int, hooks: Hooks
) -> CausalGenerator:
    """This rank's generator shard, with the attention kernel `auto` resolves to here."""
    requested = knobs.read("COMPILE_GUARD_ATTN_IMPL")
    attn = at(
        hooks,
        Point.ATTENTION_RESOLVED,
        rank=ctx.rank,
        chunk_index=-1,
        requested=requested,
        attn_impl=resolve_attention(requested),
    )["attn_impl"]
    gen = CausalGenerator(
        cfg,
        comm=TPCollectives(group=group, path=collective_path()),
        tp_rank=tp_rank,
        device=ctx.device,
        compile_cfg=ccfg,
        attn_impl=attn,
    )
    at(hooks, Point.MODEL_BUILT, rank=ctx.rank, chunk_index=-1, model=gen.model)
    return gen


class ChunkExecutor:
    """One TP rank's chunk executor; identical on every rank of the group."""

    def __init__(
        self, ctx: RankContext, layout: ParallelLayout, cfg: ModelConfig, compile_cfg: CompileConfig, hooks: Hooks
    ) -> None:
        self.ctx, self.cfg, self.layout, self.hooks = ctx, cfg, layout, hooks
        self.group, self.ranks = layout.group("tp"), layout.ranks("tp")
        self.digest_on = knobs.read("COMPILE_GUARD_INPUT_DIGEST")
        self.fingerprint_every = knobs.read("COMPILE_GUARD_FINGERPRINT_EVERY")
        self.debug_sync = knobs.read("COMPILE_GUARD_DEBUG_SYNC")
        self.compile_cfg = compile_cfg
        self.gen = build_generator(ctx, cfg, compile_cfg, group=self.group, tp_rank=layout.axis_rank("tp"), hooks=hooks)
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
            events.emit(
                "fingerprint_mismatch",
                reason=reason,
                actual=actual,
                expected=self.expected_fps,
                generator_calls=self.gen.num_calls,
            )
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
        group = at(
            self.hooks, Point.AGREEMENT_GROUP, rank=self.ctx.rank, chunk_index=k, group=self.group, layout=self.layout
        )["group"]
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
        at(self.hooks, Point.CHUNK_INPUTS, rank=rank, chunk_index=k, tensors=env.tensors, model=self.gen.model)
        self.agree(env)
        events.emit("commit", point="phase_b", group="tp", rank=rank, **env.header.ids())
        at(self.hooks, Point.PHASE_B, rank=rank, chunk_index=k, tensors=env.tensors, model=self.gen.model)
        t0 = time.perf_counter()
        clean, calls = phase_b(self.gen, env.plan, env.tensors, chunk_index=k, rank=rank)
        self.timers["generator_s"] += time.perf_counter() - t0
        self.last_chunk_calls = calls
        if self.gen.num_calls - self._calls_at_last_check >= self.fingerprint_every:
            self.check_fingerprints(reason="periodic")
        if self.debug_sync:
            barrier(group=self.group)
        events.emit("chunk_done", rank=rank, calls=calls, **env.header.ids())
        self.hooks.after_chunk(rank=rank, chunk_index=k, generator_calls=self.gen.num_calls)
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
