"""The rank side of `check --target`: the user's factory, compiled, probed, symmetric.

Per rank: join (TP over the whole world) → env and compile parity handshakes → build the
target from the factory → effective-backend handshake → warmup (every input step once) →
compile health gathered and required equal across ranks → steady state (the steps again).
Before every step the ranks agree on its input signature (compile_guard.ranks.signature)
→ a probe report for the parent, like the engine's (compile_guard.ranks.check).
"""

from __future__ import annotations

import dataclasses
import platform
from typing import Any

import torch

from compile_guard.agreement import agreement_on, ledger_on
from compile_guard.contracts.rank_job import RankJob
from compile_guard.contracts.rank_report import MESH, RankReport, RunSummary
from compile_guard.health.probe import CompileProbe
from compile_guard.health.schema import symmetric_view
from compile_guard.integrations.target import TargetContext, build
from compile_guard.quality.compile_time import CompileClock
from compile_guard.quality.measure import measure
from compile_guard.quality.subjects import target_subject
from compile_guard.ranks.handshakes import compile_payload, require_symmetric
from compile_guard.ranks.signature import agree_on_inputs
from engine.compile import CompiledRegion
from engine.control.parity import env_payload, handshake
from engine.layout import ParallelLayout, RankContext


def run(ctx: RankContext, job: RankJob, *, cold: bool = False) -> RankReport:
    """The user's --target on this rank; `cold`: it compiles in an empty inductor cache of its own."""
    spec, opts, agreement = job.spec, job.measure, job.agreement
    assert job.target is not None, "a target job names its factory"
    layout = ParallelLayout(ctx, tp=ctx.world_size)
    group, ranks = layout.group("tp"), layout.ranks("tp")
    ccfg = spec.compile_config()
    handshake("env", env_payload(spec, ctx), group=group, ranks=ranks, device=ctx.device)
    handshake("compile", compile_payload(ccfg, job), group=group, ranks=ranks, device=ctx.device)
    target = build(
        job.target.factory, TargetContext(rank=ctx.rank, world_size=ctx.world_size, tp_group=group, device=ctx.device)
    )
    effective = {
        "compile_backend": ccfg.backend,
        "device_type": ctx.device.type,
        "dist_backend": ctx.backend,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    handshake("effective_backend", effective, group=group, ranks=ranks, device=ctx.device)
    region = CompiledRegion("target", target.fn, ccfg)
    probe = CompileProbe(region)
    clock = CompileClock(cold=cold) if opts.compile_time != "off" and region.compiled else None
    with (
        agreement_on(
            region,
            group=group,
            stall_s=agreement.stall_s or None,
            enabled=agreement.compiles,
            stop_on_asymmetry=True,
            exit_status=ctx.exit_status,
        ) as agreed,
        ledger_on(agreement.eager_ledger, groups=[group]),
    ):
        probe.agreement = agreed  # rank-varying constants and issued schedules (metrics)
        report = _steps(ctx, job, target, region, probe, effective, group=group, ranks=ranks)
    if not (opts.any and region.compiled):
        return report
    quality = measure(
        target_subject(region, target, backend=spec.compile),
        opts,
        group=group,
        ranks=ranks,
        device=ctx.device,
        what=f"--target {job.target.factory}",
        clock=clock,
    )
    return dataclasses.replace(report, quality=quality)


def _steps(
    ctx: RankContext,
    job: RankJob,
    target: Any,
    region: CompiledRegion,
    probe: CompileProbe,
    effective: dict[str, Any],
    *,
    group: Any,
    ranks: tuple[int, ...],
) -> RankReport:
    steps = 0

    def run_step(args: tuple[Any, ...]) -> None:
        nonlocal steps
        if target.before_step is not None:
            target.before_step(steps)
        if job.agreement.inputs:
            agree_on_inputs(args, step=steps, group=group, ranks=ranks, device=ctx.device)  # before the step runs
        region(*args)
        steps += 1

    with torch.no_grad():
        for args in target.inputs:
            run_step(args)
        warm = require_symmetric(
            probe.snapshot(), group=group, ranks=ranks, device=ctx.device, enabled=job.agreement.gate_health
        )
        for _ in range(job.target.steady if job.target else 0):
            for args in target.inputs:
                run_step(args)
    final = probe.health(effective_backend=effective, warmup_recompiles=len(warm["recompile_reasons"]))
    return RankReport(
        scenario=job.name,
        rank=ctx.rank,
        role=MESH,
        effective_backend=effective,
        warmup=symmetric_view(warm),
        final=final,
        run=RunSummary(steps=steps),
    )
