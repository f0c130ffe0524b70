"""The rank side of `check --target`: the user's factory, compiled, probed, symmetric.

    python -m compile_guard.target_rank --target pkg.mod:factory --backend inductor --out DIR

Per rank: join (TP over the whole world) → env and compile parity handshakes → build the
target from the factory → effective-backend handshake → warmup (every input step once) →
compile health gathered and required equal across ranks → steady state (the steps again)
→ `probe-rank{r}.json` for the parent, like `check_rank`.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import Any

import torch

from compile_guard.check_rank import compile_payload, require_symmetric
from compile_guard.probe import CompileProbe, symmetric_view
from compile_guard.target import TargetContext, build
from engine import knobs
from engine.atomic_json import write_json
from engine.compile import CompileConfig, CompiledRegion
from engine.layout import ParallelLayout, RankContext
from engine.parity import handshake
from engine.runtime import rank_main


def run(ctx: RankContext, args: argparse.Namespace) -> dict[str, Any]:
    layout = ParallelLayout(ctx, tp=ctx.world_size)
    group, ranks = layout.group("tp"), layout.ranks("tp")
    ccfg = CompileConfig(enabled=True, backend=args.backend)
    env = {f"env.{k}": v for k, v in knobs.parity_values().items()} | {"target": args.target, "steady": args.steady}
    handshake("env", env, group=group, ranks=ranks, device=ctx.device)
    handshake("compile", compile_payload(ccfg), group=group, ranks=ranks, device=ctx.device)
    target = build(args.target, TargetContext(rank=ctx.rank, world_size=ctx.world_size, tp_group=group,
                                              device=ctx.device))  # fmt: skip
    effective = {"compile_backend": args.backend, "device_type": ctx.device.type, "dist_backend": ctx.backend,
                 "torch": torch.__version__, "python": platform.python_version()}  # fmt: skip
    handshake("effective_backend", effective, group=group, ranks=ranks, device=ctx.device)
    region = CompiledRegion("target", target.fn, ccfg)
    probe = CompileProbe(region)
    with torch.no_grad():
        for step in target.inputs:
            region(*step)
        warm = require_symmetric(probe.snapshot(), group=group, ranks=ranks, device=ctx.device)
        for _ in range(args.steady):
            for step in target.inputs:
                region(*step)
    final = probe.snapshot()
    steady = final["recompile_reasons"][len(warm["recompile_reasons"]):]
    return {"scenario": args.target, "rank": ctx.rank, "role": "mesh", "effective_backend": effective,
            "warmup": symmetric_view(warm), "final": final, "steady_recompiles": len(steady),
            "steady_recompile_reasons": steady, "run": {"steps": len(target.inputs) * (1 + args.steady)}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager", "eager"])
    parser.add_argument("--steady", type=int, default=3, help="times the steps run again after warmup")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)

    def write_probe(report: dict[str, Any]) -> None:
        write_json(Path(args.out) / f"probe-rank{report['rank']}.json", report)

    return rank_main(args, lambda ctx: run(ctx, args), write_probe)


if __name__ == "__main__":
    raise SystemExit(main())
