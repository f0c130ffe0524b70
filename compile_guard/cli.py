"""`python -m compile_guard` / `compile-guard`: the command line — parsing and dispatch only.

Each subcommand is a module of compile_guard.commands with `configure(parser)` and
`run(args, mode) -> exit code`; the run mode (compile_guard.launch.modes: launched, or in place under a
launcher) is chosen here, once. Nothing here imports torch: `--help`, `--version`, `check --list`
and `baseline show/diff` stay light; a command imports what it needs when it runs.

Exit codes (shared by every subcommand; compile_guard.verdict owns them): 0 pass · 1 the ranks
differ or a regression · 2 our input · 3 engine or user-code failure, a deadline, an unexpected
exception (one line, the traceback in a file) · 4 a stall · 128+N interrupted by signal N.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import platform
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from compile_guard.launch import modes
from compile_guard.launch.supervision import Interrupted
from compile_guard.verdict import INTERRUPTED_BASE, Cli
from engine import knobs

LAUNCHER_KNOBS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")

# subcommand -> (module, help, description); the description ends with an example
COMMANDS = {
    "check": ("compile_guard.commands.check", "compile-health check of a scenario against its stored baseline", None),
    "baseline": ("compile_guard.commands.baseline", "refresh, show or diff stored baselines", None),
    "repro": (
        "compile_guard.commands.repro",
        "the TP compile-cliff repro, modes A/B/C, per-rank table",
        "Example: compile-guard repro --modes B,C --backend aot_eager",
    ),
    "matrix": (
        "compile_guard.commands.matrix",
        "run the operator matrix rows (fault injection, TP=2) and print the table",
        "Example: compile-guard matrix --rows OM-01,OM-04 --json matrix.json",
    ),
    "overlap": (
        "compile_guard.commands.overlap",
        "PP0 overlap rows O-01..O-03: D sweep, overlap signature classifier, recompute coupling",
        "Example: compile-guard overlap --trace trace.json --json overlap.json",
    ),
}


def _version() -> str:
    from compile_guard import __version__
    from compile_guard.health.baseline import installed_torch

    torch = installed_torch()  # the installed torch, without importing it
    return f"compile-guard {__version__} (torch {torch}, python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compile-guard",
        description="Compile-parity regression harness for distributed PyTorch inference.",
        epilog="Examples: compile-guard check · compile-guard matrix --rows OM-01,OM-04 · "
        "compile-guard baseline refresh --scenario tp2 · compile-guard overlap --trace t.json",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text, description) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=description or getattr(module, "DESCRIPTION", None))
        module.configure(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        for name in LAUNCHER_KNOBS:  # a launcher's variables parse, or nothing starts
            knobs.read(name)
    except ValueError as exc:
        print(f"input error: {exc}", file=sys.stderr)
        return Cli.USAGE
    try:
        return args.run(args, modes.chosen())
    except Interrupted as exc:  # a launch was stopped by a signal: its ranks are already killed
        print(f"interrupted by {signal.Signals(exc.signum).name}: every rank was killed", file=sys.stderr)
        return INTERRUPTED_BASE + exc.signum
    except KeyboardInterrupt:  # Ctrl-C outside a launch (a launch turns it into "interrupted" itself)
        print("interrupted by SIGINT", file=sys.stderr)
        return INTERRUPTED_BASE + signal.SIGINT
    except Exception as exc:  # a bug of ours or of the environment: never reported as a regression
        crash_log = Path(tempfile.mkdtemp(prefix="compile_guard_crash_")) / "traceback.txt"
        crash_log.write_text(traceback.format_exc())
        print(
            f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            f" (traceback: {crash_log})",
            file=sys.stderr,
        )
        return Cli.ENGINE
