"""`compile-guard matrix`: the operator matrix rows (fault injection), per-row verdict and figures."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from compile_guard.flow.junit import Case, write_junit
from compile_guard.launch.modes import RunMode
from compile_guard.launch.supervision import Interrupted
from compile_guard.matrix.rows import ROWS, ROWS_BY_ID
from compile_guard.matrix.runner import Programs, RowResult, run_row
from compile_guard.matrix.this_run import HealthyBaselines
from compile_guard.page import render
from compile_guard.page.pages import matrix_page
from compile_guard.verdict import Cli
from engine.atomic_json import write_json, write_text

# in place, ranks > 0 wait this long for rank 0's matrix (docs/matrix.md has the whole matrix's wall time)
LEADER_WAIT_S = 3600.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", default=None, help="comma-separated row ids (default: all)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--json", type=Path, default=None, help="write every row's result here")
    parser.add_argument(
        "--html", type=Path, default=None, help="one self-contained HTML page: every row, each failing check's report"
    )
    parser.add_argument("--junit", type=Path, default=None, help="JUnit XML: one testcase per row")
    parser.add_argument("--log-dir", type=Path, default=None, help="per-row rank logs (default: a temp dir)")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 1)


def _table(results: list[RowResult]) -> str:
    table = [
        [
            r.id,
            ROWS_BY_ID[r.id].fm,
            r.observed,
            r.signature[:64],
            _ms(r.detect_s),
            _ms(r.ttf_s),
            f"{_ms(r.ttf_budget_s) or 'n/a'}{' OVER' if r.over_budget else ''}",
            len(r.leftover_pids),
            "n/a" if r.not_run else "pass" if r.passed else "FAIL",
        ]
        for r in results
    ]
    headers = ["row", "FM", "exits", "signature", "detect ms", "ttf ms", "budget ms", "left", "verdict"]
    return tabulate(table, headers=headers)


def run(args: argparse.Namespace, mode: RunMode) -> int:
    if args.list:
        return _run(args)
    return mode.leader_runs("matrix", lambda: _run(args), timeout_s=LEADER_WAIT_S)  # the rows launch ranks of their own


def _run(args: argparse.Namespace) -> int:
    if args.list:
        print(
            tabulate(
                [[r.id, r.fm, r.surface, r.fault, r.expect.event] for r in ROWS],
                headers=["id", "FM", "surface", "fault", "caught by"],
            )
        )
        return Cli.OK
    ids = list(ROWS_BY_ID) if args.rows is None else [i.strip() for i in args.rows.split(",") if i.strip()]
    if not ids:
        print(
            "--rows is empty; give row ids such as OM-01,OM-04 (see matrix --list), or omit it for all", file=sys.stderr
        )
        return Cli.USAGE
    unknown = [i for i in ids if i not in ROWS_BY_ID]
    if unknown:
        print(f"--rows: unknown row id(s) {unknown}; known: {sorted(ROWS_BY_ID)}", file=sys.stderr)
        return Cli.USAGE
    log_root = args.log_dir or Path(tempfile.mkdtemp(prefix="compile_guard_matrix_"))
    started, results = time.monotonic(), []
    from compile_guard.ranks import check, serve  # torch: imported once rows run, not for --list or --help

    programs = Programs(check=check, serve=serve)
    healthy = HealthyBaselines(log_root / "healthy", check)  # the NU rows' baseline, written once, on this machine
    for row_id in ids:
        try:
            result = run_row(ROWS_BY_ID[row_id], log_root, programs, healthy)
        except Interrupted:
            print(f"{row_id:<14} interrupted; the rows done so far:\n{_table(results)}", flush=True)
            raise
        ttf = "n/a" if result.ttf_s is None else f"{result.ttf_s:.3f}s"
        print(f"{row_id:<14} {'pass' if result.passed else 'FAIL'}  ttf={ttf}  wall={result.wall_s}s", flush=True)
        results.append(result)
    print(_table(results))
    for r in results:
        for problem in r.problems:
            print(f"FAIL {r.id}: {problem} (logs: {r.log_dir})")
    wall = time.monotonic() - started
    skipped = sum(bool(r.not_run) for r in results)
    not_run = f" ({skipped} not run on this torch: n/a)" if skipped else ""
    print(
        f"{sum(r.passed and not r.not_run for r in results)}/{len(results) - skipped} rows passed{not_run} in"
        f" {wall:.1f}s; logs: {log_root}"
    )
    if args.json:
        write_json(args.json, {"rows": [r.to_json() for r in results], "wall_s": round(wall, 2)})
    if args.html:
        page = matrix_page([r.to_json() for r in results], wall_s=round(wall, 2), text=_table(results))
        write_text(args.html, render.html(page, args.html))
    if args.junit:
        cases = [
            Case(
                name=r.id,
                classname="compile_guard.matrix",
                time_s=r.wall_s,
                failure="\n".join(r.problems) + f"\nlogs: {r.log_dir}" if r.problems else None,
                message=r.problems[0][:200] if r.problems else "",
            )
            for r in results
        ]
        write_junit(args.junit, "matrix", cases)
    return Cli.OK if all(r.passed for r in results) else Cli.FAIL
