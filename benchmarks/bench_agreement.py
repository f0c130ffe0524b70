"""What the agreements cost when nothing diverges, side by side in one run (2 ranks, gloo, CPU).

    python benchmarks/bench_agreement.py [--repeats 3] [--steps 400] [--calls 2000]

1. Compile agreement, steady state (nothing compiles): per step of a compiled TP block (funcol
   all-reduce inside, aot_eager), the same model compiled through `agree_on_compiles` and through
   the plain backend in the same process, timed in alternating blocks; the ratio is the cost.
2. Eager collectives: per eager all_reduce (1024 floats) + broadcast, bare gloo vs the ledger
   (CollectiveLedger) vs TORCH_DISTRIBUTED_DEBUG=DETAIL, each its own launch, alternated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIM, HIDDEN, TOKENS = 256, 1024, 64


def _steady(ctx, args) -> dict:
    import torch
    import torch.distributed._functional_collectives as funcol

    from compile_guard import agree_on_compiles
    from engine.layout import ParallelLayout

    group = ParallelLayout(ctx, tp=ctx.world_size).group("tp")
    gen = torch.Generator().manual_seed(0)
    up = torch.randn(HIDDEN // ctx.world_size, DIM, generator=gen) * DIM**-0.5
    down = torch.randn(DIM, HIDDEN // ctx.world_size, generator=gen) * HIDDEN**-0.5

    def block(x: torch.Tensor) -> torch.Tensor:
        return funcol.all_reduce(torch.nn.functional.gelu(x @ up.T) @ down.T, "sum", group)

    def local(x: torch.Tensor) -> torch.Tensor:  # no collective: the wrapper's own cost, without gloo's noise
        return torch.nn.functional.gelu(x @ up.T) @ down.T

    backend = agree_on_compiles(group, "aot_eager")
    variants = {
        ("TP block (funcol all-reduce)", "agreed"): torch.compile(block, backend=backend),
        ("TP block (funcol all-reduce)", "plain"): torch.compile(lambda x: block(x), backend="aot_eager"),
        ("local block (no collective)", "agreed"): torch.compile(local, backend=backend),
        ("local block (no collective)", "plain"): torch.compile(lambda x: local(x), backend="aot_eager"),
        ("tiny (x + 1): the wrapper alone", "agreed"): torch.compile(lambda x: x[:1] + 1, backend=backend),
        ("tiny (x + 1): the wrapper alone", "plain"): torch.compile(lambda x: x[:1] + 1, backend="aot_eager"),
    }
    x = torch.randn(TOKENS, DIM, generator=gen)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
    with torch.no_grad():
        for fn in variants.values():
            fn(x)  # compile (and agree) once, outside the timing
        block_steps = max(1, args.steps // 10)  # short blocks, finely interleaved: the box drifts, pairs do not
        for i in range(args.repeats * 20):
            for key in list(variants) if i % 2 == 0 else list(variants)[::-1]:
                fn = variants[key]
                t0 = time.perf_counter()
                for _ in range(block_steps):
                    fn(x)
                times[key].append((time.perf_counter() - t0) / block_steps)
    backend.agreement.close()
    return {f"{model}|{kind}": statistics.median(v) for (model, kind), v in times.items()}


def _eager(ctx, args) -> dict:
    import torch
    import torch.distributed as dist

    from compile_guard import CollectiveLedger
    from engine.layout import ParallelLayout

    group = ParallelLayout(ctx, tp=ctx.world_size).group("tp")
    x = torch.ones(1024)
    ledger = CollectiveLedger(groups=[group]).install() if args.ledger else None
    for _ in range(50):  # warm the pairs
        dist.all_reduce(x, group=group)
    t0 = time.perf_counter()
    for _ in range(args.calls // 2):
        dist.all_reduce(x, group=group)
        dist.broadcast(x, src=0, group=group)
    per_call = (time.perf_counter() - t0) / args.calls
    if ledger is not None:
        ledger.close()
    return {"per_call_s": per_call}


def rank_entry(args) -> None:
    from engine import knobs
    from engine.config import DistConfig
    from engine.rank_process import leave, rank_main

    body = _steady if args.what == "steady" else _eager

    def done(result: dict) -> None:
        if knobs.read("RANK") == 0:  # rank 0 speaks for the pair: both timed the same lockstep loop
            Path(args.out, f"result-{args.tag}.json").write_text(json.dumps(result))

    leave(rank_main(DistConfig(timeout_s=30.0), lambda ctx: body(ctx, args), done))


def _launch(what: str, tag: str, out: Path, args, *, ledger: bool = False, detail: bool = False) -> dict:
    from compile_guard.launch.launcher import LaunchSpec, launch

    argv = [
        sys.executable,
        __file__,
        "rank",
        "--what",
        what,
        "--tag",
        tag,
        "--out",
        str(out),
        "--repeats",
        str(args.repeats),
        "--steps",
        str(args.steps),
        "--calls",
        str(args.calls),
    ]
    if ledger:
        argv.append("--ledger")
    env = {"TORCH_DISTRIBUTED_DEBUG": "DETAIL"} if detail else {}
    result = launch(LaunchSpec(argv=argv, nprocs=2, deadline_s=600.0, log_dir=out / tag, env=env))
    if not result.ok:
        raise SystemExit(f"{tag} failed:\n{result.summary()}")
    return json.loads((out / f"result-{tag}.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="parent", choices=["parent", "rank"])
    parser.add_argument("--what", default="steady", choices=["steady", "eager"])
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--ledger", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    if args.role == "rank":
        rank_entry(args)
    from tabulate import tabulate

    out = Path(tempfile.mkdtemp(prefix="bench_agreement_"))
    steady = _launch("steady", "steady", out, args)
    models = sorted({k.split("|")[0] for k in steady})
    print(
        tabulate(
            [
                [
                    m,
                    f"{steady[m + '|plain'] * 1e6:.1f}",
                    f"{steady[m + '|agreed'] * 1e6:.1f}",
                    f"{(steady[m + '|agreed'] - steady[m + '|plain']) * 1e6:+.1f}",
                    f"{steady[m + '|agreed'] / steady[m + '|plain']:.3f}",
                ]
                for m in models
            ],
            headers=["steady state, nothing compiles", "plain us/step", "agreed us/step", "delta us", "ratio"],
        )
    )
    rows: dict[str, list[float]] = {"bare gloo": [], "ledger": [], "DETAIL": []}
    for i in range(args.repeats):
        for name in list(rows) if i % 2 == 0 else list(rows)[::-1]:
            res = _launch(
                "eager",
                f"eager-{name.replace(' ', '_')}-{i}",
                out,
                args,
                ledger=name == "ledger",
                detail=name == "DETAIL",
            )
            rows[name].append(res["per_call_s"])
    bare = statistics.median(rows["bare gloo"])
    print(
        tabulate(
            [[k, f"{statistics.median(v) * 1e6:.1f}", f"{statistics.median(v) / bare:.2f}"] for k, v in rows.items()],
            headers=["eager all_reduce/broadcast", "us/call (median)", "vs bare"],
        )
    )
    print(f"logs: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
