"""`python -m compile_guard` / `compile-guard`: the command line.

Exit codes (shared by every subcommand):
  0 pass · 1 invariant failed / regression · 2 usage or input error ·
  3 engine failure or deadline (the failing rank and its log tail are printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from compile_guard import baseline as bl
from compile_guard.check_cmd import add_check_args, baseline_command, check_command
from compile_guard.junit import Case, write_junit
from compile_guard.launcher import LaunchResult, LaunchSpec, launch, python_module_argv
from compile_guard.scenarios import DEFAULT_SCENARIO, SCENARIOS
from engine import knobs
from engine.atomic_json import write_json

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ENGINE = 0, 1, 2, 3
REPRO_MODULE = "repro.tp_compile_repro"

log = logging.getLogger("compile_guard")


def _add_repro_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=int, default=2, help="ranks to launch (TP degree)")
    parser.add_argument("--modes", default="A,B,C", help="repro modes, subset of A,B,C")
    parser.add_argument(
        "--backend", default="inductor", choices=["inductor", "aot_eager", "eager"],
        help="compiler backend of modes B and C",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per mode")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per mode")
    parser.add_argument("--deadline-s", type=float, default=600.0, help="hard limit for the run")
    parser.add_argument("--log-dir", type=Path, default=None, help="per-rank logs (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the per-rank rows here")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compile-guard",
        description="Compile-parity regression harness for distributed PyTorch inference.",
        epilog="Examples: compile-guard check · compile-guard matrix --rows OM-01,OM-04 · "
        "compile-guard baseline refresh --scenario tp2 · compile-guard overlap --trace t.json",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="compile-health check of a scenario against its stored baseline",
        description="Launch the scenario's ranks; handshakes (env, compile, effective backend), lockstep "
        "warmup, per-rank compile health gathered and required equal across ranks, steady state, then a diff "
        "against the stored baseline. Example: compile-guard check --scenario tp2 --json out.json",
    )
    add_check_args(check)
    baseline = sub.add_parser("baseline", help="refresh, show or diff stored baselines")
    actions = baseline.add_subparsers(dest="action", required=True)
    refresh = actions.add_parser("refresh", help="run the check and write its baseline (atomically)",
                                 description="Example: compile-guard baseline refresh --scenario tp2")
    refresh.add_argument("--scenario", default=DEFAULT_SCENARIO)
    refresh.add_argument("--baselines", type=Path, default=bl.DEFAULT_DIR)
    refresh.add_argument("--log-dir", type=Path, default=None)
    refresh.add_argument("--dump-dir", type=Path, default=None)
    refresh.add_argument("--target", default=None, help="your own model: package.module:factory")
    refresh.add_argument("--nproc", type=int, default=2, help="with --target: ranks")
    refresh.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager", "eager"])
    show = actions.add_parser("show", help="print a baseline",
                              description="Example: compile-guard baseline show --scenario tp2")
    show.add_argument("--scenario", default=DEFAULT_SCENARIO, choices=sorted(SCENARIOS))
    show.add_argument("--file", type=Path, default=None, help="a baseline file (instead of --scenario)")
    show.add_argument("--baselines", type=Path, default=bl.DEFAULT_DIR)
    diff = actions.add_parser("diff", help="compare two baseline files (e.g. torch 2.13 vs 2.14)",
                              description="Example: compile-guard baseline diff baselines/A.json baselines/B.json")
    diff.add_argument("a", type=Path)
    diff.add_argument("b", type=Path)
    repro = sub.add_parser(
        "repro",
        help="the TP compile-cliff repro, modes A/B/C, per-rank table",
        description="Example: compile-guard repro --modes B,C --backend aot_eager",
    )
    _add_repro_args(repro)
    matrix = sub.add_parser(
        "matrix",
        help="run the operator matrix rows (fault injection, TP=2) and print the table",
        description="Example: compile-guard matrix --rows OM-01,OM-04 --json matrix.json",
    )
    matrix.add_argument("--rows", default=None, help="comma-separated row ids (default: all)")
    matrix.add_argument("--list", action="store_true", help="list the rows and exit")
    matrix.add_argument("--json", type=Path, default=None, help="write every row's result here")
    matrix.add_argument("--junit", type=Path, default=None, help="JUnit XML: one testcase per row")
    matrix.add_argument("--log-dir", type=Path, default=None, help="per-row rank logs (default: a temp dir)")
    overlap = sub.add_parser(
        "overlap",
        help="PP0 overlap rows O-01..O-03: D sweep, overlap signature classifier, recompute coupling",
        description="Example: compile-guard overlap --trace trace.json --json overlap.json",
    )
    overlap.add_argument("--chunks", type=int, default=24, help="chunks per run")
    overlap.add_argument("--trace", type=Path, default=None, help="Chrome/Perfetto trace of the D=2 run")
    overlap.add_argument("--json", type=Path, default=None, help="every run's summary")
    overlap.add_argument("--log-dir", type=Path, default=None, help="per-run rank logs (default: a temp dir)")
    return parser


def _version() -> str:
    import platform

    import torch

    from compile_guard import __version__

    return f"compile-guard {__version__} (torch {torch.__version__}, python {platform.python_version()})"


def _repro_argv(args: argparse.Namespace, json_path: Path | None) -> list[str]:
    argv = [
        "--modes", args.modes, "--backend", args.backend, "--warmup", str(args.warmup),
        "--calls", str(args.calls),
    ]  # fmt: skip
    return argv + (["--json", str(json_path)] if json_path else [])


def _report_failure(result: LaunchResult) -> None:
    print(f"ranks failed: {result.summary()}", file=sys.stderr)
    culprit = result.first_failed if result.first_failed is not None else 0
    print(f"--- log tail of rank {culprit} ---\n{result.ranks[culprit].log_tail}", file=sys.stderr)


def run_repro(args: argparse.Namespace) -> int:
    if knobs.under_torchrun():
        # Already one of N ranks (torchrun): run in place, the launcher is not needed.
        from repro import tp_compile_repro

        return tp_compile_repro.main(_repro_argv(args, args.json))
    if args.nproc < 1:
        print(f"--nproc {args.nproc} is invalid; expected >= 1", file=sys.stderr)
        return EXIT_USAGE
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="compile_guard_"))
    json_path = args.json or log_dir / "repro.json"
    started = time.monotonic()
    print(f"launching {args.nproc} ranks (logs: {log_dir})", flush=True)
    result = launch(
        LaunchSpec(
            argv=python_module_argv(REPRO_MODULE, *_repro_argv(args, json_path)),
            nprocs=args.nproc,
            deadline_s=args.deadline_s,
            log_dir=log_dir,
        )
    )
    if not json_path.exists():
        _report_failure(result)
        return EXIT_ENGINE
    report = json.loads(json_path.read_text())
    cols = ["rank", "mode", "collective_path", "backend", "graph_break_count", "graph_count", "ms_per_call"]
    print(tabulate([[row[c] for c in cols] for row in report["rows"]], headers=cols))
    for line in report["problems"]:
        print(f"FAIL: {line}")
    print(f"wall time {time.monotonic() - started:.1f}s; json: {json_path}")
    if report["problems"]:
        return EXIT_FAIL
    if not result.ok:
        _report_failure(result)
        return EXIT_ENGINE
    return EXIT_OK


def run_matrix(args: argparse.Namespace) -> int:
    from compile_guard.matrix import run_row
    from compile_guard.matrix_rows import ROWS, ROWS_BY_ID

    if args.list:
        print(tabulate([[r.id, r.fm, r.surface, r.fault, r.expect.event] for r in ROWS],
                       headers=["id", "FM", "surface", "fault", "caught by"]))  # fmt: skip
        return EXIT_OK
    ids = [i.strip() for i in args.rows.split(",") if i.strip()] if args.rows else list(ROWS_BY_ID)
    unknown = [i for i in ids if i not in ROWS_BY_ID]
    if unknown or not ids:
        print(f"--rows: unknown row id(s) {unknown}; known: {sorted(ROWS_BY_ID)}", file=sys.stderr)
        return EXIT_USAGE
    log_root = args.log_dir or Path(tempfile.mkdtemp(prefix="compile_guard_matrix_"))
    started, results = time.monotonic(), []
    for row_id in ids:
        result = run_row(ROWS_BY_ID[row_id], log_root)
        ttf = "n/a" if result.ttf_s is None else f"{result.ttf_s:.3f}s"
        print(f"{row_id:<14} {'pass' if result.passed else 'FAIL'}  ttf={ttf}  wall={result.wall_s}s", flush=True)
        results.append(result)
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1e3, 1)

    table = [
        [r.id, ROWS_BY_ID[r.id].fm, r.observed, r.signature[:64], ms(r.detect_s), ms(r.ttf_s),
         f"{ms(r.ttf_budget_s) or 'n/a'}{' OVER' if r.over_budget else ''}", len(r.leftover_pids),
         "pass" if r.passed else "FAIL"]
        for r in results
    ]  # fmt: skip
    headers = ["row", "FM", "exits", "signature", "detect ms", "ttf ms", "budget ms", "left", "verdict"]
    print(tabulate(table, headers=headers))
    for r in results:
        for problem in r.problems:
            print(f"FAIL {r.id}: {problem} (logs: {r.log_dir})")
    wall = time.monotonic() - started
    print(f"{sum(r.passed for r in results)}/{len(results)} rows passed in {wall:.1f}s; logs: {log_root}")
    if args.json:
        write_json(args.json, {"rows": [r.to_json() for r in results], "wall_s": round(wall, 2)})
    if args.junit:
        cases = [Case(name=r.id, classname="compile_guard.matrix", time_s=r.wall_s,
                      failure="\n".join(r.problems) + f"\nlogs: {r.log_dir}" if r.problems else None,
                      message=r.problems[0][:200] if r.problems else "") for r in results]  # fmt: skip
        write_junit(args.junit, "matrix", cases)
    return EXIT_OK if all(r.passed for r in results) else EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command == "check":
        return check_command(args)
    if args.command == "baseline":
        return baseline_command(args)
    if args.command == "matrix":
        return run_matrix(args)
    if args.command == "overlap":
        from compile_guard.overlap import overlap_command

        return overlap_command(args)
    return run_repro(args)
