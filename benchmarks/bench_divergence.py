"""Each compile-divergence row three ways, side by side in one run: compile_guard, bare gloo, DETAIL.

    python benchmarks/bench_divergence.py [--rows CD-01,CD-03] [--deadline-s 120]

- compile_guard: the row as the matrix runs it (compile agreement on; EL rows with the ledger);
- bare: the same fault with compile_guard's compile and collective checks off (compile agreement, input
  agreement, ledger, post-warmup health gather; the engine's own control-plane tripwires stay): what a
  job sees today;
- DETAIL: bare plus TORCH_DISTRIBUTED_DEBUG=DETAIL (c10d's per-collective fingerprint check).

Per row and mode: how the run ended (exit codes, or a hang: the deadline), time from launch to
the first rank's failure record (each mode's time-to-detect on one clock; compile_guard's own
figure from the end of the divergent compile is printed too), and whether the failure names the
cause: "full" = the rank and the frame/guard/break or the collective with its source line,
"collective" = op and shapes only, "none". A run that ends 0 did not detect anything: the ranks
went on with different programs (silent drift).

Then the healthy skews, each guarded by compile_guard and each of which it must *not* stop (a false
stop): a peer 3 s late to its first compile and to a symmetric recompile, a peer SIGSTOPped 5 s, a
peer compiling 3 s longer, a rank-varying constant, an idle server 15 s under the ledger (the one-call
APIs in tests/agreement_programs.py), a vocab-parallel model's `check` (docs/examples/vocab_parallel.py)
and CD-06-dtensor (artifacts loaded on one rank).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compile_guard.flow import check_run  # noqa: E402
from compile_guard.flow.request import CheckRequest  # noqa: E402
from compile_guard.flow.scenarios import target_scenario  # noqa: E402
from compile_guard.launch.modes import Launched  # noqa: E402
from compile_guard.matrix.rows import ROWS, Row  # noqa: E402
from compile_guard.matrix.runner import Programs, check_job, run_row  # noqa: E402
from compile_guard.ranks import check, serve  # noqa: E402

MODES = ("compile_guard", "bare", "DETAIL")
_FULL = re.compile(
    r"guard failed|gb\d{4}|first differing (issued )?collective: #|rank\d+: \w+ \{.*\} at \S+:\d+|"
    r"made call \d+ of this frame without compiling|settings\.\w+\.\w+|parity mismatch on \d+ key"
)
PROGRAM = str(Path(__file__).resolve().parent.parent / "tests" / "agreement_programs.py")
HEALTHY = {  # name -> the agreement program's arguments: every one must end 0 on both ranks
    "peer 3 s late to its first compile": ["compile", "--fault", "late_first", "--late-s", "3"],
    "peer 3 s late to a symmetric recompile": ["compile", "--fault", "late_recompile", "--late-s", "3"],
    "peer SIGSTOPped 5 s, then SIGCONT": ["compile", "--fault", "sigstop", "--late-s", "5"],
    "peer compiling 3 s longer": ["compile", "--fault", "slow_compile"],
    "rank-varying constant (offset = 128 * rank)": ["compile", "--fault", "varying"],
    "idle server 15 s (ledger)": ["ledger", "--fault", "idle", "--late-s", "15"],
    "the same print on every rank (one resume function each)": ["compile", "--fault", "print_every_rank"],
}
_COLLECTIVE = re.compile(r"OpType=|TensorShape|[Ss]ize mismatch|mismatch between collectives", re.S)


def cause(text: str) -> str:
    if _FULL.search(text):
        return "full"
    return "collective" if _COLLECTIVE.search(text) else "none"


def run_mode(row: Row, mode: str, log_root: Path, deadline_s: float) -> dict[str, object]:
    job = check_job(row).replace(deadline_s=deadline_s)
    env = dict(row.env)
    if mode != "compile_guard":
        job = job.replace(agree_compiles=False, agree_inputs=False, eager_ledger=False, gate_health=False)
    if mode == "DETAIL":
        env["TORCH_DISTRIBUTED_DEBUG"] = "DETAIL"
    t0 = time.monotonic()
    request = CheckRequest(
        job=job,
        program=check,
        baselines=log_root,
        log_dir=log_root / f"{row.id}-{mode}",
        env=env,
        rank_env=row.rank_env,
    )
    run = check_run.run_ranks(request, Launched())
    result = run.result
    failed = [r.failed_at_s for r in result.ranks if r.failed_at_s is not None and not r.ok]
    texts = "\n".join((r.failure or "") + "\n" + r.log_tail for r in result.ranks)
    ended = (
        "hang (deadline)"
        if result.outcome == "deadline"
        else ", ".join(str(r.signal or r.returncode) for r in result.ranks)
    )
    detected = result.outcome not in ("ok", "deadline")
    return {
        "ended": ended,
        "detected": "yes" if detected else ("hang" if result.outcome == "deadline" else "no"),
        "ttd_s": round(min(failed), 2) if failed and detected else None,
        "cause": cause(texts) if detected else "-",
        "wall_s": round(time.monotonic() - t0, 1),
    }


def healthy(log_root: Path) -> list[list[str]]:
    """Each healthy skew once under compile_guard: how it ended (a nonzero exit is a false stop)."""
    from compile_guard.launch.launcher import LaunchSpec, launch
    from compile_guard.matrix.rows import ROWS_BY_ID

    rows = []
    for name, argv in HEALTHY.items():
        t0 = time.monotonic()
        result = launch(
            LaunchSpec(
                argv=[sys.executable, PROGRAM, *argv],
                nprocs=2,
                deadline_s=120.0,
                log_dir=log_root / "healthy" / name.split()[0],
            )
        )
        codes = [r.signal or r.returncode for r in result.ranks]
        rows.append(
            [name, ", ".join(map(str, codes)), "no" if result.ok else "FALSE STOP", f"{time.monotonic() - t0:.1f}"]
        )
    job = target_scenario("docs.examples.vocab_parallel:model", nprocs=2, backend="aot_eager")
    t0 = time.monotonic()
    run = check_run.run_ranks(
        CheckRequest(job=job, program=check, baselines=log_root, log_dir=log_root / "healthy" / "vocab"), Launched()
    )
    rows.append(
        [
            "vocab-parallel model (check --target)",
            ", ".join(str(r.returncode) for r in run.result.ranks),
            "no" if run.result.ok else "FALSE STOP",
            f"{time.monotonic() - t0:.1f}",
        ]
    )
    cd06 = run_row(ROWS_BY_ID["CD-06-dtensor"], log_root / "rows", Programs(check=check, serve=serve))
    rows.append(
        [
            "CD-06-dtensor: artifacts loaded on one rank",
            "row " + ("passed" if cd06.passed else "FAILED"),
            "no" if cd06.passed else "FALSE STOP",
            "-",
        ]
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="", help="comma-separated row ids (default: every CD/EL row and C-03)")
    parser.add_argument("--deadline-s", type=float, default=120.0, help="per run: past it, a hang")
    parser.add_argument("--no-healthy", action="store_true", help="skip the healthy skews")
    args = parser.parse_args()
    wanted = [
        r for r in ROWS if (r.id in args.rows.split(",") if args.rows else r.id.startswith(("CD-", "EL-", "C-03")))
    ]
    log_root = Path(tempfile.mkdtemp(prefix="bench_divergence_"))
    table = []
    for row in wanted:
        own = run_row(row, log_root / "rows", Programs(check=check, serve=serve))
        cells = [row.id, row.fault[:44], f"{own.ttf_s}" if own.passed else "ROW FAILED"]
        for mode in MODES:
            m = run_mode(row, mode, log_root, args.deadline_s)
            cells += [f"{m['detected']} {m['ttd_s'] if m['ttd_s'] is not None else ''}".strip(), m["cause"]]
            print(f"{row.id} {mode}: {m}", flush=True)
        table.append(cells)
    headers = ["row", "fault", "cg ttf s*"] + [f"{m} {k}" for m in MODES for k in ("detected (s)", "cause")]
    print(tabulate(table, headers=headers, disable_numparse=True))
    print(
        "* compile_guard's time-to-fail from the end of the divergent compile to every rank stopped; the"
        " 'detected (s)' columns run from the launch (startup and warmup compile included) on one clock"
    )
    if not args.no_healthy:
        rows = healthy(log_root)
        print(
            tabulate(
                rows, headers=["healthy skew (must not stop)", "exits", "stopped?", "wall s"], disable_numparse=True
            )
        )
        print(f"false stops: {sum(r[2] != 'no' for r in rows)} of {len(rows)}")
    print(f"logs: {log_root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
