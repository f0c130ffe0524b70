"""The rank side of `check`: handshakes, lockstep warmup, compile-health probes.

    python -m compile_guard.ranks.check --spec '<RunSpec JSON>' --out DIR     # on every rank

On each rank, before any inference: the env parity handshake (FM-01), the compile
parity handshake (C-01: compile on/off and every setting that changes graphs), the
effective-backend handshake (C-04: what `auto` resolved to). Then the warmup chunk
(chunk_index=-1) runs through the control plane; right after it every rank's compile
health is gathered and must be equal across the group (C-03), else every rank exits
with the diff. Then the steady-state chunks; the probe is taken again to count
recompiles after warmup. Each rank writes `probe-rank{r}.json` into --out; the parent
(compile_guard.check_run) diffs it against the baseline. A `--target` spec runs the
user's factory instead of the engine (compile_guard.ranks.target).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch.distributed as dist

from compile_guard.agreement import agreement_on, ledger_on
from compile_guard.health.probe import CompileProbe
from compile_guard.health.schema import symmetric_view
from compile_guard.matrix.faults import FaultInjector
from compile_guard.ranks import target
from compile_guard.ranks.dump import depyf_dump
from compile_guard.ranks.handshakes import HealthGate, compile_payload
from engine.atomic_json import write_json
from engine.control.parity import handshake
from engine.hooks import HookChain
from engine.layout import RankContext
from engine.rank_process import leave, rank_main
from engine.runspec import RunSpec
from engine.topology import pp1, tp
from engine.topology.executor import ChunkExecutor


def run(ctx: RankContext, spec: RunSpec, dump_dir: Path | None) -> dict[str, Any]:
    faults = FaultInjector.from_knobs()
    if spec.topology == "pp1":
        layout, cfg, ccfg = pp1.prepare(ctx, spec)
        if ctx.rank == pp1.DRIVER:  # out of the mesh, compiles nothing: reported apart
            summary = pp1.drive(ctx, layout, cfg, spec, faults)
            return {"scenario": spec.name, "rank": ctx.rank, "role": "driver", "run": summary}
    else:
        layout, cfg, ccfg = tp.prepare(ctx, spec)
    # The symmetric group: the TP group (tp2) or the mesh (pp1). Compile settings, resolved
    # backends and compile health must match inside it.
    group, ranks = layout.group("tp"), layout.ranks("tp")
    handshake("compile", compile_payload(ccfg), group=group, ranks=ranks, device=ctx.device)
    gate = HealthGate(group=group, ranks=ranks, device=ctx.device, enabled=spec.gate_health)
    hooks = HookChain(faults, gate)
    ex = ChunkExecutor(ctx, layout, cfg, ccfg, hooks)
    effective = ex.effective_backend()
    handshake("effective_backend", effective, group=group, ranks=ranks, device=ctx.device)
    gate.probe = CompileProbe(ex.gen.region)
    dump = depyf_dump(dump_dir / f"rank{ctx.rank}" if dump_dir else None)
    # pp1: rank0 drives the mesh from outside it and keeps no ledger, so the mesh watches its own group only
    groups = [group] if spec.topology == "pp1" or group is dist.group.WORLD else [group, dist.group.WORLD]
    # check keeps failing a rank-only graph break (C-03) even where the collective streams line up
    agreement = agreement_on(ex.gen.region, group=group, stall_s=spec.stall_s or None, enabled=spec.agree_compiles,
                             stop_on_asymmetry=True)  # fmt: skip
    with agreement as agreed, ledger_on(spec.eager_ledger, groups=groups), dump:
        gate.probe.constants_from = agreed
        if spec.topology == "pp1":
            pp1.serve_mesh(ctx, layout, ex)
        else:
            tp.serve(ex, layout, spec, hooks)
    final = gate.probe.snapshot(effective_backend=effective, warmup_recompiles=len(gate.warmup["recompile_reasons"]))
    return {
        "scenario": spec.name,
        "rank": ctx.rank,
        "role": "mesh",
        "effective_backend": effective,
        "warmup": symmetric_view(gate.warmup),
        "final": final,
        "steady_recompiles": final["steady_recompiles"],
        "steady_recompile_reasons": final["steady_recompile_reasons"],
        "run": {"generator_calls": ex.gen.num_calls, **ex.timers},
    }


def probe_rank(ctx: RankContext, spec: RunSpec, dump_dir: Path | None) -> dict[str, Any]:
    """This rank's probe report: the engine's scenario, or the user's --target."""
    return target.run(ctx, spec) if spec.target is not None else run(ctx, spec, dump_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the run spec, canonical JSON (engine.runspec.RunSpec)")
    parser.add_argument("--out", required=True, help="directory for probe-rank{r}.json")
    parser.add_argument("--dump-dir", type=Path, default=None, help="depyf dumps per rank")
    args = parser.parse_args(argv)
    spec = RunSpec.from_json(args.spec)
    out = Path(args.out)

    def write_probe(report: dict[str, Any]) -> None:
        write_json(out / f"probe-rank{report['rank']}.json", report)

    return rank_main(spec.dist_config(), lambda ctx: probe_rank(ctx, spec, args.dump_dir), write_probe)


if __name__ == "__main__":
    leave(main())
