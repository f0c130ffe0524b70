"""The quality measurement's noise, false alarms and cost, quiet and under a CPU hog on every core.

    python benchmarks/bench_quality.py [--runs 10] [--scenario tp2 | --target pkg.mod:factory] [--compile-time auto]

1. `baseline refresh` into a temp directory (with --compile-time cold: that state's entry; then as the runs are).
2. For each phase (quiet, then one busy-looping process per core in its own session, killed at the end): `--runs`
   times, `check` with quality against that baseline and `check --no-quality`, alternating which goes first.
3. Tables: per phase, the false alarms (any quality row judged a regression: the box and the build are the
   same, so each one is false), the spread over the runs of rank 0's speedup and compile-time ratio and of the
   compile time in seconds (a ratio to the calibration should spread less than seconds under the hog), and the
   wall of check with and without quality (the measurement's cost).
Figures for docs/check.md and the README; never an assertion in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from compile_guard.health import baseline as bl
from compile_guard.quality import judge
from compile_guard.quality.options import Judging

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str) -> tuple[int, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "compile_guard", *args], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    if proc.returncode not in (0, 1):
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return proc.returncode, time.monotonic() - started


class Hog:
    """One busy-looping process per core, each in its own session, all killed on exit (any exit)."""

    def __enter__(self) -> Hog:
        self.procs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            for _ in range(os.cpu_count() or 1)
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    cv = statistics.pstdev(values) / mean if mean else 0.0
    return f"{min(values):.3g}..{max(values):.3g} (median {statistics.median(values):.3g}, cv {cv:.1%})"


def phase(name: str, pick: list[str], baselines: Path, runs: int, out: Path, compile_time: str) -> dict:
    walls_q, walls_bare, alarms, speedups, ratios, seconds, codes, reports = [], [], [], [], {}, {}, [], []
    for i in range(runs):
        report = out / f"{name}-{i}.json"
        quality = ["check", *pick, "--baselines", str(baselines), "--json", str(report), "--compile-time", compile_time]
        bare = ["check", *pick, "--baselines", str(baselines), "--no-quality"]
        for argv in (quality, bare) if i % 2 == 0 else (bare, quality):
            code, wall = cli(*argv)
            (walls_q if argv is quality else walls_bare).append(wall)
            if argv is quality:
                codes.append(code)
        data = json.loads(report.read_text()) if report.exists() else {}
        rows = [r for r in data.get("rows", []) if judge.is_quality(r["metric"])]
        alarms += [f"run {i}: {r['metric']}" for r in rows if r["verdict"] == "regression"]
        mesh = [p for p in data.get("probes", []) if p.get("quality")]
        reports.append([(f"rank{p['rank']}", p["quality"]) for p in mesh])
        probe = mesh[0] if mesh else {}
        quality_of = probe.get("quality", {})
        if "speed" in quality_of:
            speedups.append(quality_of["speed"]["speedup"])
        for state, c in quality_of.get("compile_time", {}).items():
            ratios.setdefault(state, []).append(c["ratio"])
            seconds.setdefault(state, []).append(c["total_s"])
        print(
            f"{name} run {i}: exit {codes[-1]}, speedup {speedups[-1] if speedups else '-'},"
            f" compile { ({s: v[-1] for s, v in ratios.items()}) }, alarms so far {len(alarms)}",
            flush=True,
        )
    return {
        "phase": name,
        "runs": runs,
        "exit codes": sorted(set(codes)),
        "alarms": alarms,
        "speedup": speedups,
        "ratios": ratios,
        "seconds": seconds,
        "wall_q": walls_q,
        "wall_bare": walls_bare,
        "reports": reports,
    }


FACTORS = (1.15, 1.2, 1.25, 1.3, 1.5)


def rejudged(result: dict, base: dict) -> list[str]:
    """The false alarms each candidate speed and compile factor would have raised on these runs."""
    cells = []
    for f in FACTORS:
        judging = Judging(speed_factor=f, compile_factor=f, compile_floor_s=0.0)
        speed = compile_ = 0
        for per_rank in result["reports"]:
            rows, _ = judge.rows(base, per_rank, judging)
            speed += any(r.verdict == "regression" and r.metric == judge.SPEEDUP for r in rows)
            compile_ += any(r.verdict == "regression" and r.metric.startswith("compile time") for r in rows)
        cells.append(f"x{f}: {speed}/{compile_}")
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--scenario", default="tp2")
    parser.add_argument("--target", default=None)
    parser.add_argument("--compile-time", default="auto", choices=["auto", "cold"])
    parser.add_argument("--phases", default="quiet,hog")
    args = parser.parse_args()
    pick = ["--target", args.target] if args.target else ["--scenario", args.scenario]
    baselines = Path(tempfile.mkdtemp(prefix="bench_quality_baselines_"))
    out = Path(tempfile.mkdtemp(prefix="bench_quality_"))
    if args.compile_time == "cold":
        cli("baseline", "refresh", *pick, "--baselines", str(baselines), "--compile-time", "cold")
    cli("baseline", "refresh", *pick, "--baselines", str(baselines))  # warm (or the state the runs will be in)
    results = []
    for name in args.phases.split(","):
        if name == "hog":
            with Hog():
                results.append(phase(name, pick, baselines, args.runs, out, args.compile_time))
        else:
            results.append(phase(name, pick, baselines, args.runs, out, args.compile_time))
    table = []
    for r in results:
        overhead = statistics.median(r["wall_q"]) / statistics.median(r["wall_bare"]) - 1
        table.append(
            [
                r["phase"],
                r["runs"],
                r["exit codes"],
                len(r["alarms"]),
                _spread(r["speedup"]),
                "; ".join(f"{s}: {_spread(v)}" for s, v in r["ratios"].items()),
                "; ".join(f"{s}: {_spread(v)}" for s, v in r["seconds"].items()),
                f"{statistics.median(r['wall_q']):.1f} / {statistics.median(r['wall_bare']):.1f} ({overhead:+.0%})",
            ]
        )
    print(f"\n{' '.join(pick)}, --compile-time {args.compile_time}, {args.runs} runs per phase; reports in {out}")
    print(
        tabulate(
            table,
            headers=[
                "phase",
                "runs",
                "exits",
                "false alarms",
                "speedup (rank 0)",
                "compile time / calibration",
                "compile time s",
                "wall s quality / none",
            ],
        )
    )
    base = bl.load(next(baselines.glob("*.json"))).quality
    print("\nfalse alarms per candidate factor (speed / compile time; compile floor 0 s), runs with one or more:")
    print(tabulate([[r["phase"], *rejudged(r, base)] for r in results], headers=["phase", *map(str, FACTORS)]))
    for r in results:
        for alarm in r["alarms"]:
            print(f"  {r['phase']} false alarm: {alarm}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
