"""The rank side of `check`: handshakes, lockstep warmup, compile-health probes.

    python -m compile_guard.ranks.check --job '<RankJob JSON>' --out DIR     # on every rank

On each rank, before any inference: the env parity handshake (FM-01), the compile
parity handshake (C-01: compile on/off, every setting that changes graphs and the job's options), the
effective-backend handshake (C-04: what `auto` resolved to). Then the warmup chunk
(chunk_index=-1) runs through the control plane; right after it every rank's compile
health is gathered and must be equal across the group (C-03), else every rank exits
with the diff. Then the steady-state chunks; the probe is taken again to count
recompiles after warmup. Each rank writes its `RankReport` as `probe-rank{r}.json` into --out;
the parent (compile_guard.flow.check_run) reads it back validated and diffs it against the baseline.
The engine is reached only through its stages (engine.topology.stages) and the region's two
declared hooks; the fault injector is wired in only when the run asks for a fault. A `--target` job runs the
user's factory instead of the engine (compile_guard.ranks.target).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from compile_guard.agreement import agreement_on, ledger_on
from compile_guard.contracts.rank_job import RankJob
from compile_guard.contracts.rank_report import DRIVER, FILE, MESH, RankReport, RunSummary
from compile_guard.health.probe import CompileProbe
from compile_guard.health.schema import symmetric_view
from compile_guard.matrix.faults import FaultInjector
from compile_guard.matrix.lowering_faults import lowering_fault
from compile_guard.quality.compile_time import CompileClock
from compile_guard.quality.measure import measure
from compile_guard.quality.subjects import Recorder, compile_cache, engine_subject
from compile_guard.ranks import target
from compile_guard.ranks.dump import depyf_dump
from compile_guard.ranks.handshakes import HealthGate, compile_payload
from engine.atomic_json import write_text
from engine.config import DistConfig
from engine.control.parity import handshake
from engine.hooks import HookChain
from engine.layout import RankContext
from engine.rank_process import leave, rank_main
from engine.topology import pp1, stages, tp


def run(ctx: RankContext, job: RankJob, dump_dir: Path | None, *, cold: bool = False) -> RankReport:
    """The engine's scenario through its three stages (engine.topology.stages), probed between them; `cold`: it
    compiles in an empty inductor cache directory of its own."""
    spec, opts = job.spec, job.measure
    prepared = (pp1 if spec.topology == "pp1" else tp).prepare(ctx, spec)
    faults = FaultInjector.requested()  # only a matrix row's run asks for one
    if prepared.role == stages.DRIVER:  # pp1's rank 0: out of the mesh, compiles nothing: reported apart
        summary = prepared.build(faults).serve()
        return RankReport(scenario=spec.name, rank=ctx.rank, role=DRIVER, run=RunSummary.of(summary))
    # The symmetric group: the TP group (tp2) or the mesh (pp1). Compile settings, resolved backends and
    # compile health must match inside it.
    group, ranks = prepared.group, prepared.ranks
    handshake("compile", compile_payload(prepared.ccfg, job), group=group, ranks=ranks, device=ctx.device)
    gate = HealthGate(group=group, ranks=ranks, device=ctx.device, enabled=job.agreement.gate_health)
    built = prepared.build(HookChain(*(h for h in (faults, gate) if h is not None)))
    effective = built.effective_backend
    handshake("effective_backend", effective, group=group, ranks=ranks, device=ctx.device)
    gate.probe = CompileProbe(built.region)
    # the warmup chunk's calls of the region, replayed by the quality measurement after the run
    recorder = Recorder(built.region, limit=opts.max_calls) if opts.any and built.region.compiled else None
    clock = CompileClock(cold=cold) if opts.compile_time != "off" and built.region.compiled else None
    dump = depyf_dump(dump_dir / f"rank{ctx.rank}" if dump_dir else None)
    # pp1: rank0 drives the mesh from outside it and keeps no ledger, so the mesh watches its own group only
    groups = [group] if spec.topology == "pp1" or group is dist.group.WORLD else [group, dist.group.WORLD]
    # check keeps failing a rank-only graph break (C-03) even where the collective streams line up
    agreement = agreement_on(
        built.region,
        group=group,
        stall_s=job.agreement.stall_s or None,
        enabled=job.agreement.compiles,
        stop_on_asymmetry=True,
        exit_status=ctx.exit_status,
    )
    with agreement as agreed, ledger_on(job.agreement.eager_ledger, groups=groups), dump:
        gate.probe.agreement = agreed
        if recorder is not None:
            gate.after_warmup = lambda: setattr(recorder, "recording", False)
        summary = built.serve()
    final = gate.probe.health(effective_backend=effective, warmup_recompiles=len(gate.warmup["recompile_reasons"]))
    quality = None
    if recorder is not None:
        subject = engine_subject(built.region, recorder.calls, backend=spec.compile)
        quality = measure(
            subject, opts, group=group, ranks=ranks, device=ctx.device, what=f"scenario {spec.name}", clock=clock
        )
    return RankReport(
        scenario=spec.name,
        rank=ctx.rank,
        role=MESH,
        effective_backend=effective,
        warmup=symmetric_view(gate.warmup),
        final=final,
        run=RunSummary.of(summary),
        quality=quality,
    )


def probe_rank(ctx: RankContext, job: RankJob, dump_dir: Path | None) -> RankReport:
    """This rank's report: the engine's scenario, or the user's --target (compiled cold in an empty inductor cache
    directory of this rank's own with --compile-time cold, or when the cache is empty as the rank starts)."""
    with compile_cache(job.measure, job.spec.compile) as cold, lowering_fault():
        return target.run(ctx, job, cold=cold) if job.target is not None else run(ctx, job, dump_dir, cold=cold)


def _parse(argv: list[str] | None, *, launched: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="the job, canonical JSON (compile_guard.contracts.rank_job)")
    parser.add_argument("--out", required=launched, help="directory for probe-rank{r}.json")
    parser.add_argument("--dump-dir", type=Path, default=None, help="depyf dumps per rank")
    return parser.parse_args(argv)


def in_place(argv: list[str]) -> tuple[DistConfig, Callable[[RankContext], str]]:
    """The in-place run mode's entry (compile_guard.launch.modes.InPlace): this rank's body, its report as JSON."""
    args = _parse(argv, launched=False)
    job = RankJob.from_json(args.job)
    return job.spec.dist_config(), lambda ctx: probe_rank(ctx, job, args.dump_dir).to_json()


def main(argv: list[str] | None = None) -> int:
    """The launched run mode's entry: this rank's report written as probe-rank{r}.json into --out."""
    args = _parse(argv, launched=True)
    job = RankJob.from_json(args.job)
    out = Path(args.out)

    def write_probe(report: RankReport) -> None:
        write_text(out / FILE.format(rank=report.rank), report.to_json())

    return rank_main(job.spec.dist_config(), lambda ctx: probe_rank(ctx, job, args.dump_dir), write_probe)


if __name__ == "__main__":
    leave(main())
