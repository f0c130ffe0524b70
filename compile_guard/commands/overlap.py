"""`python -m compile_guard overlap`: the O rows of the matrix on PP0, as tables.

  O-01  D sweep, D_in = D_out = D in {1, 2, 3, 4}: FPS, period, stages, OverlapScore,
        p50/p95 chunk latency, queue depths, queued bytes, peak RSS;
  O-02  overlap signature: the healthy schedule vs the serialised bug (decode k before
        sending k+1), each *classified* from its metrics;
  O-03  recompute coupling: R1 (off) vs R0a (rank0 supplies the context from its own
        decode), the OverlapScore delta.
Each run is a fresh pair of ranks (engine.topology.pp0, run by compile_guard.ranks.serve)
through the launcher, with a deadline.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from tabulate import tabulate

from compile_guard.commands.argtypes import positive_int
from compile_guard.launch.launcher import LaunchSpec, launch, python_module_argv
from compile_guard.launch.modes import RunMode
from compile_guard.launch.supervision import Interrupted
from engine.atomic_json import write_json
from engine.runspec import PP0Spec, RunSpec
from engine.topology.overlap_metrics import chrome_trace, classify

MATRIX_GATE = 0.30  # the operator matrix's OverlapScore gate for a healthy pipeline
DEPTHS = (1, 2, 3, 4)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", type=positive_int, default=24, help="chunks per run")
    parser.add_argument("--trace", type=Path, default=None, help="Chrome/Perfetto trace of the D=2 run")
    parser.add_argument("--json", type=Path, default=None, help="every run's summary")
    parser.add_argument("--log-dir", type=Path, default=None, help="per-run rank logs (default: a temp dir)")


PP0_DEADLINE_S = 300.0  # one stage pair's run, 24 chunks: seconds; past this it is a hang


def pp0_spec(*, depth: int, chunks: int, recompute: str = "r1", schedule: str = "healthy") -> RunSpec:
    return RunSpec(
        name=f"pp0-d{depth}-{recompute}-{schedule}",
        topology="pp0",
        nprocs=2,
        compile="off",
        chunks=chunks,
        pp0=PP0Spec(d_in=depth, d_out=depth, recompute=recompute, schedule=schedule),
    )


def run_pp0(log_dir: Path, *, depth: int, chunks: int, recompute: str = "r1", schedule: str = "healthy") -> dict:
    from compile_guard.ranks import serve  # torch: imported once a run starts, not for --help

    spec = pp0_spec(depth=depth, chunks=chunks, recompute=recompute, schedule=schedule)
    result = launch(
        LaunchSpec(
            argv=python_module_argv(serve, "--spec", spec.to_json(), "--out", str(log_dir)),
            nprocs=2,
            deadline_s=PP0_DEADLINE_S,
            log_dir=log_dir,
        )
    )
    if result.outcome == "interrupted":
        raise Interrupted(result.interrupted_by)
    if not result.ok:
        raise RuntimeError(f"PP0 run failed:\n{result.summary()}\n{result.ranks[result.first_failed or 0].log_tail}")
    ranks = [json.loads((log_dir / f"pp0-rank{r}.json").read_text()) for r in (0, 1)]
    return {**ranks[0], "peak_rss_mb_stage1": ranks[1]["peak_rss_mb"]}


def _r(x: float, n: int = 1) -> float:
    return round(x, n)


def run(args: argparse.Namespace, mode: RunMode) -> int:
    return mode.leader_runs("overlap", lambda: _run(args), timeout_s=3600.0)  # each run launches a stage pair


def _run(args: argparse.Namespace) -> int:
    root = args.log_dir or Path(tempfile.mkdtemp(prefix="compile_guard_overlap_"))
    runs: dict[str, dict[str, Any]] = {}
    for d in DEPTHS:
        runs[f"D={d}"] = run_pp0(root / f"d{d}", depth=d, chunks=args.chunks)
    runs["serial"] = run_pp0(root / "serial", depth=2, chunks=args.chunks, schedule="serial")
    runs["R0a"] = run_pp0(root / "r0a", depth=2, chunks=args.chunks, recompute="r0a")
    print(f"O-01 D sweep (D_in = D_out = D, R1, {args.chunks} chunks; medians after 2 warm chunks)")
    print(_sweep_table(runs))
    print("\nO-02 overlap signature (D=2)")
    problems = _signature(runs)
    delta = _coupling(runs)
    d2 = runs["D=2"]["summary"]
    print(
        f"\nD=2: OverlapScore {d2['overlap_score']:.2f} (target >= 0.6, matrix gate {MATRIX_GATE}); "
        f"period / max(stage0, stage1) = {d2['period_over_max_stage']:.2f} (target <= 1.1); "
        f"D=1: OverlapScore {runs['D=1']['summary']['overlap_score']:.2f} (collapsed)"
    )
    if args.trace:
        write_json(args.trace, chrome_trace(runs["D=2"]["records"]))
        print(f"trace (D=2 healthy; open in chrome://tracing or ui.perfetto.dev): {args.trace}")
    if args.json:
        kept = ("summary", "max_depth", "queued_bytes_peak", "config")
        runs_kept = {k: {kk: v[kk] for kk in kept} for k, v in runs.items()}
        write_json(args.json, {"runs": runs_kept, "o03_delta": delta, "problems": problems})
    for p in problems:
        print(f"FAIL {p}")
    print(f"logs: {root}")
    return 1 if problems else 0


_SWEEP_HEADERS = [
    "D",
    "chunks/s",
    "period ms",
    "stage0 ms",
    "stage1 ms",
    "OverlapScore",
    "period/max(stage)",
    "p50 ms",
    "p95 ms",
    "mesh idle ms",
    "max in-flight/ready",
    "queued KiB",
    "peak RSS MB r0/r1",
]


def _sweep_table(runs: dict[str, dict[str, Any]]) -> str:
    """O-01: one line per depth."""
    rows = []
    for d in DEPTHS:
        run = runs[f"D={d}"]
        s, med = run["summary"], run["summary"]["median"]
        rows.append(
            [
                d,
                _r(s["fps_chunks"], 2),
                _r(med["period_ms"]),
                _r(med["stage0_ms"]),
                _r(med["stage1_ms"]),
                _r(s["overlap_score"], 2),
                _r(s["period_over_max_stage"], 2),
                _r(s["latency_p50_ms"]),
                _r(s["latency_p95_ms"]),
                _r(med["t_mesh_idle_ms"], 2),
                f"{run['max_depth']['in_flight']}/{run['max_depth']['ready']}",
                _r(run["queued_bytes_peak"] / 1024),
                f"{_r(run['peak_rss_mb'])}/{_r(run['peak_rss_mb_stage1'])}",
            ]
        )
    return tabulate(rows, headers=_SWEEP_HEADERS)


def _signature(runs: dict[str, dict[str, Any]]) -> list[str]:
    """O-02: the healthy and the serial schedule classified, printed; the problems when either is misread."""
    problems, rows = [], []
    for name, expected in (("D=2", "healthy"), ("serial", "serialized")):
        s = runs[name]["summary"]
        label, why = classify(s)
        if label != expected:
            problems.append(f"O-02: the {name} schedule was classified {label}, expected {expected} ({why})")
        rows.append(
            [
                name if name != "D=2" else "healthy",
                _r(s["median"]["period_ms"]),
                _r(s["median"]["t_mesh_idle_ms"], 2),
                _r(s["median"]["decode_ms"]),
                _r(s["overlap_score"], 2),
                label,
                "yes" if label == expected else "NO",
                why,
            ]
        )
    headers = ["schedule", "period ms", "mesh idle ms", "decode ms", "OverlapScore", "classified", "correct", "why"]
    print(tabulate(rows, headers=headers))
    return problems


def _coupling(runs: dict[str, dict[str, Any]]) -> float:
    """O-03: OverlapScore with and without rank0's recompute context, printed; the delta."""
    r1, r0a = runs["D=2"]["summary"], runs["R0a"]["summary"]
    print("\nO-03 recompute coupling (D=2)")
    print(
        tabulate(
            [
                ["R1 (off)", _r(r1["overlap_score"], 2), _r(r1["median"]["period_ms"])],
                ["R0a (rank0 context)", _r(r0a["overlap_score"], 2), _r(r0a["median"]["period_ms"])],
            ],
            headers=["regime", "OverlapScore", "period ms"],
        )
    )
    delta = r0a["overlap_score"] - r1["overlap_score"]
    print(f"OverlapScore delta R0a - R1 = {delta:+.2f}")
    return delta
