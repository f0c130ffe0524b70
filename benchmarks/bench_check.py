"""What `check` costs over a bare compile-and-warm-up of the same engine, side by side.

    python benchmarks/bench_check.py [--repeats 3] [--scenario tp2]

Both sides spawn the same 2 ranks through the same launcher and compile the same engine
with the same generator calls. `check` adds the three handshakes, the control plane,
tripwires, probes and the cross-rank gather; the bare side (benchmarks/bare_warmup.py)
has none of them. Warm: the inductor cache is primed first; cold: a fresh cache dir for
every run. Runs alternate so both sides share the machine's noise. Then what reading the
issued schedule costs against the compile it follows, as each rank timed both (compile_s,
issued_read_ms of its graph_compiled events).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from compile_guard.contracts.rank_job import RankJob
from compile_guard.flow.check_run import run_ranks
from compile_guard.flow.request import CheckRequest
from compile_guard.flow.scenarios import SCENARIOS
from compile_guard.launch.launcher import LaunchSpec, launch
from compile_guard.launch.modes import Launched
from compile_guard.ranks import check
from engine import events

REPO = Path(__file__).resolve().parent.parent


def bare(scenario, log_dir: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    result = launch(
        LaunchSpec(
            argv=[
                sys.executable,
                str(REPO / "benchmarks" / "bare_warmup.py"),
                "--compile",
                scenario.compile,
                "--layers",
                str(scenario.layers),
                "--chunks",
                str(scenario.chunks),
            ],
            nprocs=scenario.nprocs,
            deadline_s=900,
            log_dir=log_dir,
            env=env,
        )
    )
    if not result.ok:
        raise SystemExit(f"bare run failed:\n{result.summary()}")
    return time.monotonic() - t0


READS: list[tuple[str, float, float]] = []  # (cache, compile s, issued-schedule read ms) per rank per graph


def checked(scenario, log_dir: Path, env: dict[str, str], *, cache: str = "warm") -> float:
    t0 = time.monotonic()
    run = run_ranks(
        CheckRequest(job=RankJob(spec=scenario), program=check, baselines=log_dir, log_dir=log_dir, env=env or {}),
        Launched(),
    )
    if run.reports is None:
        raise SystemExit(f"check run failed:\n{run.result.summary()}")
    for rank in run.result.ranks:  # the compile agreement's own timing of each graph, side by side in one process
        for e in events.parse(rank.log_path.read_text()):
            if e["event"] == "graph_compiled" and "compile_s" in e:
                READS.append((cache, e["compile_s"], e["issued_read_ms"]))
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="tp2", choices=sorted(SCENARIOS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold-repeats", type=int, default=1)
    args = parser.parse_args()
    scenario = SCENARIOS[args.scenario]
    root = Path(tempfile.mkdtemp(prefix="bench_check_"))
    warm_env = {"TORCHINDUCTOR_CACHE_DIR": str(root / "warm_cache")}
    checked(scenario, root / "prime", warm_env, cache="prime (cold)")  # prime the shared warm cache
    warm = {"check": [], "bare": []}
    for i in range(args.repeats):
        warm["bare"].append(bare(scenario, root / f"bare{i}", warm_env))
        warm["check"].append(checked(scenario, root / f"check{i}", warm_env))
    cold = {"check": [], "bare": []}
    for i in range(args.cold_repeats):
        cold["bare"].append(bare(scenario, root / f"cbare{i}", {"TORCHINDUCTOR_CACHE_DIR": str(root / f"cb{i}")}))
        cold["check"].append(
            checked(scenario, root / f"ccheck{i}", {"TORCHINDUCTOR_CACHE_DIR": str(root / f"cc{i}")}, cache="cold")
        )
    rows = []
    for name, runs in (("warm cache", warm), ("cold cache", cold)):
        c, b = statistics.median(runs["check"]), statistics.median(runs["bare"])
        rows.append([name, round(b, 2), round(c, 2), f"{c / b:.3f}", len(runs["check"])])
    print(tabulate(rows, headers=["", "bare s", "check s", "check / bare", "runs (median)"]))
    reads = []
    for cache in ("prime (cold)", "warm", "cold"):
        mine = [(c, r) for k, c, r in READS if k == cache]
        if mine:
            compile_s, read_ms = sum(c for c, _ in mine), sum(r for _, r in mine)
            reads.append([cache, len(mine), round(compile_s, 2), round(read_ms, 1), f"{read_ms / 10 / compile_s:.3f}%"])
    print("\nreading the issued schedule (inductor's wrapper parsed after each compile), per rank and graph:")
    print(tabulate(reads, headers=["cache", "graphs", "compile s", "read ms", "read / compile"]))
    print(f"\nscenario {scenario.name}: {scenario.description}; logs: {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
