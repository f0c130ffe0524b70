"""`compile-guard repro`: the TP compile-cliff repro (modes A/B/C) through the launcher, per-rank table."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from compile_guard.commands.argtypes import non_negative_int, positive_int, positive_seconds
from compile_guard.launch.launcher import LaunchResult, LaunchSpec, launch, python_module_argv
from compile_guard.launch.modes import RunMode
from compile_guard.launch.supervision import Interrupted
from compile_guard.verdict import Cli


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=positive_int, default=2, help="ranks to launch (TP degree)")
    parser.add_argument("--modes", default="A,B,C", help="repro modes, subset of A,B,C")
    parser.add_argument(
        "--backend",
        default="inductor",
        choices=["inductor", "aot_eager", "eager"],
        help="compiler backend of modes B and C",
    )
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed calls per mode")
    parser.add_argument("--calls", type=positive_int, default=20, help="timed calls per mode")
    parser.add_argument("--deadline-s", type=positive_seconds, default=600.0, help="hard limit for the run")
    parser.add_argument("--log-dir", type=Path, default=None, help="per-rank logs (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the per-rank rows here")


def _repro_argv(args: argparse.Namespace, json_path: Path | None) -> list[str]:
    argv = [
        "--modes",
        args.modes,
        "--backend",
        args.backend,
        "--warmup",
        str(args.warmup),
        "--calls",
        str(args.calls),
    ]
    return argv + (["--json", str(json_path)] if json_path else [])


def _report_failure(result: LaunchResult) -> None:
    print(f"ranks failed: {result.summary()}", file=sys.stderr)
    culprit = result.first_failed if result.first_failed is not None else 0
    print(f"--- log tail of rank {culprit} ---\n{result.ranks[culprit].log_tail}", file=sys.stderr)


def run(args: argparse.Namespace, mode: RunMode) -> int:
    from repro import tp_compile_repro  # torch: imported once the command runs, not for --help

    if not mode.launches:
        # Already one of N ranks (torchrun): run in place, the launcher is not needed.
        return tp_compile_repro.main(_repro_argv(args, args.json))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="compile_guard_"))
    json_path = args.json or log_dir / "repro.json"
    started = time.monotonic()
    print(f"launching {args.nproc} ranks (logs: {log_dir})", flush=True)
    result = launch(
        LaunchSpec(
            argv=python_module_argv(tp_compile_repro, *_repro_argv(args, json_path)),
            nprocs=args.nproc,
            deadline_s=args.deadline_s,
            log_dir=log_dir,
        )
    )
    if result.outcome == "interrupted":
        raise Interrupted(result.interrupted_by)
    if not json_path.exists():
        _report_failure(result)
        return Cli.ENGINE
    report = json.loads(json_path.read_text())
    cols = ["rank", "mode", "collective_path", "backend", "graph_break_count", "graph_count", "ms_per_call"]
    print(tabulate([[row[c] for c in cols] for row in report["rows"]], headers=cols))
    for line in report["problems"]:
        print(f"FAIL: {line}")
    print(f"wall time {time.monotonic() - started:.1f}s; json: {json_path}")
    if report["problems"]:
        return Cli.FAIL
    if not result.ok:
        _report_failure(result)
        return Cli.ENGINE
    return Cli.OK
