"""Reproduces the TP "compile cliff": collectives hidden from dynamo shatter the graph.

Runs the engine's TP generator (all blocks, KV cache view, cross-attention) three ways:
  A  eager, in-place c10d collectives;
  B  compiled, each collective wrapped in torch.compiler.disable() -> a graph break per
     collective, many graphs, and eager hops between them;
  C  compiled, functional collectives -> invariant: 0 graph breaks and 1 graph per rank.
Prints a per-rank table and exits 1 when mode C's invariant fails on any rank.

    torchrun --nproc-per-node=2 repro/tp_compile_repro.py
    python -m compile_guard repro            # the same, through compile_guard's launcher
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from engine.atomic_json import write_json
from engine.collectives import CollectivePath, TPCollectives, all_gather_json
from engine.compile import CompileConfig
from engine.config import DistConfig, ModelConfig
from engine.layout import ParallelLayout
from engine.lifecycle import joined
from engine.model.generator import CausalGenerator

log = logging.getLogger("repro")

# mode -> (compiled?, collective path)
MODES = {
    "A": (False, CollectivePath.INPLACE),
    "B": (True, CollectivePath.DISABLED),
    "C": (True, CollectivePath.FUNCTIONAL),
}


def run_mode(mode, *, cfg, layout, device, backend, warmup, calls):
    compiled, path = MODES[mode]
    torch._dynamo.reset()  # each mode compiles from scratch; counters are region deltas
    gen = CausalGenerator(
        cfg,
        comm=TPCollectives(group=layout.group("tp"), path=path),
        tp_rank=layout.axis_rank("tp"),
        device=device,
        compile_cfg=CompileConfig(enabled=compiled, backend=backend),
    )
    inputs = torch.Generator().manual_seed(1234)
    cond = torch.randn(1, cfg.cond_len, cfg.cond_dim, generator=inputs)
    latents = torch.randn(
        1,
        cfg.frames_per_chunk,
        cfg.latent_channels,
        cfg.latent_height,
        cfg.latent_width,
        generator=inputs,
    )

    def call():
        # Same frames every call: the cache view is identical, so every call is comparable.
        return gen(latents, 500.0, current_start_frame=0, conditioning=cond)

    t0 = time.perf_counter()
    for _ in range(warmup):
        out = call()
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(calls):
        out = call()
    ms_per_call = (time.perf_counter() - t0) / calls * 1e3
    return {
        "rank": layout.ctx.rank,
        "mode": mode,
        "collective_path": path.value,
        "backend": backend if compiled else "eager",
        "graph_break_count": gen.region.graph_break_count,
        "graph_count": gen.region.graph_count,
        "ms_per_call": round(ms_per_call, 3),
        "warmup_s": round(warmup_s, 3),
        "checksum": float(out.double().sum()),
    }


def check_rows(rows):
    """Violations of the repro's invariants, as readable lines."""
    problems = []
    for row in rows:
        if row["mode"] == "C" and (row["graph_break_count"] != 0 or row["graph_count"] != 1):
            problems.append(
                f"rank {row['rank']} mode C: graph_break_count={row['graph_break_count']}"
                f" graph_count={row['graph_count']}; expected 0 and 1 (functional collectives"
                " must stay in one graph)"
            )
    by_rank = {}
    for row in rows:
        by_rank.setdefault(row["rank"], {})[row["mode"]] = row["checksum"]
    for rank, sums in sorted(by_rank.items()):
        ref = sums.get("A")
        for mode, value in sums.items():
            if ref is not None and abs(value - ref) > 1e-3 * max(1.0, abs(ref)):
                problems.append(f"rank {rank} mode {mode}: checksum {value} differs from eager {ref}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="A,B,C", help="comma-separated subset of A,B,C")
    parser.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager", "eager"])
    parser.add_argument("--warmup", type=int, default=3, help="calls before timing (compiles here)")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per mode")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--timeout-s", type=float, default=60.0, help="process-group timeout")
    parser.add_argument("--json", default=None, help="rank 0 writes all rows here")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        parser.error(f"--modes {args.modes!r}: unknown {unknown}; pick from {sorted(MODES)}")
    rank = os.environ.get("RANK", "?")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(name)s: %(message)s")
    torch.set_num_threads(1)

    with joined(DistConfig(device=args.device, timeout_s=args.timeout_s)) as ctx:
        layout = ParallelLayout(ctx, tp=ctx.world_size)
        cfg = ModelConfig()
        mine = []
        for mode in modes:
            row = run_mode(
                mode,
                cfg=cfg,
                layout=layout,
                device=ctx.device,
                backend=args.backend,
                warmup=args.warmup,
                calls=args.calls,
            )
            log.info("mode %s done: %s", mode, row)
            mine.append(row)
        gathered = all_gather_json(mine, group=layout.group("tp"), device=ctx.device)
        rows = [row for per_rank in gathered for row in per_rank]
        problems = check_rows(rows)
        if ctx.rank == 0:
            cols = ["rank", "mode", "collective_path", "graph_break_count", "graph_count", "ms_per_call"]
            print(tabulate([[r[c] for c in cols] for r in rows], headers=cols), flush=True)
            if args.json:
                write_json(Path(args.json), {"rows": rows, "problems": problems})
        for line in problems:
            log.error("invariant failed: %s", line)
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
