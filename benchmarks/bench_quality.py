"""The timing rules' detection curve and false alarms, side by side in one run, and what the measurement costs.

    python benchmarks/bench_quality.py [--runs 10] [--target pkg.mod:factory] [--phases ...] [--out DIR]

1. `baseline refresh --compile-time cold --runs 5` of the target (default: the quality example) into a temp
   directory: the baseline every run below is judged against, written on this machine, its noise between runs
   measured from its 5 runs.
2. Phases, `--runs` checks each, every check with an inductor cache directory of its own that is empty when its
   ranks start (so compile time is judged cold by default, as on upgrade day), judged with the defaults:
   - `quiet`, `hog` (one busy-looping process per core, in its own session, killed at the end): healthy runs,
     where any timing regression is a false alarm;
   - `speed-5`, `speed-10`, `speed-20`: the compiled step followed by CPU work of 5, 10, 20 % of its own measured
     cost (COMPILE_GUARD_TEST_SLOWER_STEP): a speed loss of known size, to be caught;
   - `compile-10`, `compile-15`, `compile-30`: a post-grad pass burning 10, 15, 30 % of the baseline's cold
     compile CPU seconds (COMPILE_GUARD_TEST_LOWERING=slow_compile with COMPILE_GUARD_TEST_SLOW_COMPILE_S).
3. `--overhead N`: `check --scenario tp2` with and without quality, N times each, alternating: what the
   measurement adds to check's wall.
Tables: per phase, the runs caught (any rank's row a regression) on the speed row and the compile (cold) row;
the median minimum detectable effect per rank; the ratio each run read. Each run is judged twice from its
report: against the 5-run baseline (the noise measured) and against its first run alone (the noise assumed:
the defaults), so both setups are measured on the same runs. Figures for docs/check.md; never an assertion in
tests.
"""

from __future__ import annotations

import argparse
import contextlib
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

from compile_guard.contracts import wire
from compile_guard.contracts.rank_report import QualityReport
from compile_guard.launch.supervision import die_with_parent
from compile_guard.quality import rows as quality_rows
from compile_guard.quality.options import Judging

REPO = Path(__file__).resolve().parent.parent
SPEED_ROW, COLD_ROW = "speedup (eager/compiled)", "compile time (cold)"
PHASES = ("quiet", "hog", "speed-5", "speed-10", "speed-20", "compile-10", "compile-15", "compile-30")


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, float, str]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "compile_guard", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode not in (0, 1):
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return proc.returncode, time.monotonic() - started, proc.stdout


class Hog:
    """One busy-looping process per core, each in its own session, all killed on exit (any exit)."""

    def __enter__(self) -> Hog:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", "while True: pass"],
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),  # no hog outlives a killed benchmark
            )
            for _ in range(os.cpu_count() or 1)
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def fault_env(phase: str, cold_cpu_s: float) -> dict[str, str]:
    kind, _, size = phase.partition("-")
    if kind == "speed":
        return {"COMPILE_GUARD_TEST_SLOWER_STEP": str(int(size) / 100)}
    if kind == "compile":
        return {
            "COMPILE_GUARD_TEST_LOWERING": "slow_compile",
            "COMPILE_GUARD_TEST_SLOW_COMPILE_S": f"{int(size) / 100 * cold_cpu_s:.3f}",
        }
    return {}


def one_run(pick: list[str], baselines: Path, out: Path, name: str, env: dict[str, str]) -> dict:
    report = out / f"{name}.json"
    cache = tempfile.mkdtemp(prefix="bench_quality_cache_")  # empty as the ranks start: a cold compile, by default
    code, wall, _ = cli(
        "check",
        *pick,
        "--baselines",
        str(baselines),
        "--json",
        str(report),
        env={**env, "TORCHINDUCTOR_CACHE_DIR": cache},
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    quality = [  # each rank's measurement as the judge reads it: typed, by the one reader
        (f"rank{p['rank']}", wire.read(QualityReport, p["quality"], what=f"rank {p['rank']}'s quality"))
        for p in data.get("probes", [])
        if p.get("quality")
    ]
    return {"code": code, "wall": wall, "quality": quality}


def judged(run: dict, base: dict) -> dict:
    """A run's quality rows and timing figures against `base` (a baseline's quality), with the defaults."""
    rows, _lines, timings = quality_rows.rows(base, run["quality"], Judging())
    return {"verdicts": {r.metric: r.verdict for r in rows}, "timings": timings}


def first_run_only(base: dict) -> dict:
    """The baseline as one refresh run would have written it: its first run's figures, the noise assumed."""
    single = {}
    for rank, entry in base.items():
        entry = {**entry}
        if "speed" in entry:
            entry["speed"] = {**entry["speed"], "runs": entry["speed"]["runs"][:1]}
        entry["compile_time"] = {s: {**c, "runs": c["runs"][:1]} for s, c in entry.get("compile_time", {}).items()}
        single[rank] = entry
    return single


def _rate(runs: list[dict], row: str) -> str:
    caught = sum(r["verdicts"].get(row) == "regression" for r in runs)
    return f"{caught}/{len(runs)}"


def _per_rank(runs: list[dict], key: str, field: str) -> str:
    cells = []
    for rank in ("rank0", "rank1"):
        values = []
        for r in runs:
            found = r["timings"].get(rank, {})
            for part in key.split("."):
                found = found.get(part, {}) if isinstance(found, dict) else {}
            if isinstance(found, dict) and found.get(field) is not None:
                values.append(found[field])
        cells.append(f"{statistics.median(values):.3g}" if values else "-")
    return " / ".join(cells)


def _ratios(runs: list[dict], key: str) -> str:
    said = []
    for r in runs:
        found = r["timings"].get("rank0", {})
        for part in key.split("."):
            found = found.get(part, {}) if isinstance(found, dict) else {}
        said.append(f"{found.get('ratio', float('nan')):.3f}" if isinstance(found, dict) and found else "-")
    return " ".join(said)


def overhead(n: int) -> list[list]:
    quality, bare = [], []
    for i in range(n):
        for argv, walls in ((["check"], quality), (["check", "--no-quality"], bare))[:: 1 if i % 2 == 0 else -1]:
            code, wall, _ = cli(*argv)
            walls.append(wall)
            print(f"overhead {argv}: exit {code}, {wall:.1f}s", flush=True)
    q, b = statistics.median(quality), statistics.median(bare)
    return [["tp2 check wall, quality / --no-quality (median)", f"{q:.1f} s / {b:.1f} s", f"{q / b - 1:+.0%}"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline-runs", type=int, default=5, help="the baseline refresh's --runs")
    parser.add_argument("--target", default="docs.examples.quality_block:block")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--overhead", type=int, default=0, help="tp2 checks with and without quality, each")
    parser.add_argument("--out", type=Path, default=None, help="keep every report here (default: a temp dir)")
    args = parser.parse_args()
    pick = ["--target", args.target]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_quality_"))
    out.mkdir(parents=True, exist_ok=True)
    baselines = out / "baselines"
    refresh = ["baseline", "refresh", *pick, "--baselines", str(baselines), "--compile-time", "cold"]
    code, _, text = cli(*refresh, "--runs", str(args.baseline_runs))
    if code != 0:
        print(text, file=sys.stderr)
        return code
    base = json.loads(next(baselines.glob("*.json")).read_text())
    cold_cpu_s = base["quality"]["rank0"]["compile_time"]["cold"]["total_s"]
    print(f"baseline: speedup {base['quality']['rank0']['speed']['runs']}, cold compile {cold_cpu_s:.2f} s CPU")
    results: dict[str, list[dict]] = {}
    for phase in args.phases.split(","):
        runs = results.setdefault(phase, [])
        with Hog() if phase == "hog" else contextlib.nullcontext():
            for i in range(args.runs):
                runs.append(one_run(pick, baselines, out, f"{phase}-{i}", fault_env(phase, cold_cpu_s)))
                last = judged(runs[-1], base["quality"])["verdicts"]
                print(
                    f"{phase} run {i}: exit {runs[-1]['code']}, speed {last.get(SPEED_ROW)},"
                    f" cold {last.get(COLD_ROW)}, {runs[-1]['wall']:.0f}s",
                    flush=True,
                )
        (out / "results.json").write_text(json.dumps(results, indent=1))
    for label, against in (
        (f"the {args.baseline_runs}-run baseline (noise measured)", base["quality"]),
        ("its first run alone (noise assumed: --speed-noise, --compile-noise)", first_run_only(base["quality"])),
    ):
        table = []
        for phase, runs in results.items():
            seen = [judged(r, against) for r in runs]
            table.append(
                [
                    phase,
                    len(runs),
                    _rate(seen, SPEED_ROW),
                    _rate(seen, COLD_ROW),
                    _per_rank(seen, "speed", "mde"),
                    _per_rank(seen, "compile_time.cold", "mde"),
                    _per_rank(seen, "speed", "ratio"),
                    _per_rank(seen, "compile_time.cold", "ratio"),
                ]
            )
        print(f"\n{args.target}, judged with the defaults against {label}; reports in {out}")
        print(
            tabulate(
                table,
                headers=[
                    "phase",
                    "runs",
                    "speed caught",
                    "compile caught",
                    "speed MDE r0/r1",
                    "compile MDE r0/r1",
                    "step ratio r0/r1",
                    "compile ratio r0/r1",
                ],
            )
        )
    print("\nrank 0's ratio per run against the measured baseline (compiled step; cold compile):")
    for phase, runs in results.items():
        seen = [judged(r, base["quality"]) for r in runs]
        print(f"  {phase}: step {_ratios(seen, 'speed')}; compile {_ratios(seen, 'compile_time.cold')}")
    if args.overhead:
        print(tabulate(overhead(args.overhead), headers=["what", "wall", "added"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
