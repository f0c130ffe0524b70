"""The compile cliff, measured: modes A/B/C side by side in one run, TP=2, gloo, CPU.

    python benchmarks/bench_repro.py [--backend inductor] [--calls 50] [--cold]

Prints ms per generator call (mean over ranks), graphs and breaks per mode, and the
ratios B/C and A/C. One run, all modes: this machine is noisy, so only ratios measured
together mean anything.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tabulate import tabulate

from compile_guard.launch.launcher import LaunchSpec, launch, python_module_argv
from repro import tp_compile_repro


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager"])
    parser.add_argument("--calls", type=int, default=50, help="timed calls per mode")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="fresh inductor cache: warmup = cold compile")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="bench_repro_"))
    json_path = log_dir / "repro.json"
    result = launch(
        LaunchSpec(
            argv=python_module_argv(
                tp_compile_repro,
                "--backend",
                args.backend,
                "--calls",
                str(args.calls),
                "--warmup",
                str(args.warmup),
                "--json",
                str(json_path),
            ),
            nprocs=args.nproc,
            deadline_s=900,
            log_dir=log_dir,
            env={"TORCHINDUCTOR_CACHE_DIR": str(log_dir / "inductor_cache")} if args.cold else {},
        )
    )
    if not json_path.exists():
        print(result.summary())
        return 3
    rows = json.loads(json_path.read_text())["rows"]
    table, ms = [], {}
    for mode in ("A", "B", "C"):
        mine = [r for r in rows if r["mode"] == mode]
        ms[mode] = sum(r["ms_per_call"] for r in mine) / len(mine)
        table.append(
            [
                mode,
                mine[0]["collective_path"],
                mine[0]["backend"],
                round(ms[mode], 2),
                "/".join(str(r["graph_count"]) for r in mine),
                "/".join(str(r["graph_break_count"]) for r in mine),
                round(sum(r["warmup_s"] for r in mine) / len(mine), 2),
            ]
        )
    headers = ["mode", "collectives", "backend", "ms/call", "graphs (per rank)", "breaks (per rank)", "warmup s"]
    print(tabulate(table, headers=headers))
    cache = "cold" if args.cold else "warm"
    print(
        f"\nB/C = {ms['B'] / ms['C']:.2f}   A/C = {ms['A'] / ms['C']:.2f}   "
        f"(TP={args.nproc}, {args.calls} calls per mode, {cache} compile cache, logs: {log_dir})"
    )
    return 0 if result.ok else 3


if __name__ == "__main__":
    raise SystemExit(main())
