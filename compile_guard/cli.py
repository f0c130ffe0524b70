"""`python -m compile_guard` / `compile-guard`: the command line — parsing and dispatch only.

Each subcommand is a module of compile_guard.commands with `configure(parser)` and
`run(args) -> exit code`. Nothing here imports torch: `--help`, `--version`, `check --list`
and `baseline show/diff` stay light; a command imports what it needs when it runs.

Exit codes (shared by every subcommand):
  0 pass · 1 invariant failed / regression · 2 usage or input error ·
  3 engine failure or deadline (the failing rank and its log tail are printed).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import platform

# subcommand -> (module, help, description); the description ends with an example
COMMANDS = {
    "check": ("compile_guard.commands.check", "compile-health check of a scenario against its stored baseline", None),
    "baseline": ("compile_guard.commands.baseline", "refresh, show or diff stored baselines", None),
    "repro": ("compile_guard.commands.repro", "the TP compile-cliff repro, modes A/B/C, per-rank table",
              "Example: compile-guard repro --modes B,C --backend aot_eager"),
    "matrix": ("compile_guard.commands.matrix",
               "run the operator matrix rows (fault injection, TP=2) and print the table",
               "Example: compile-guard matrix --rows OM-01,OM-04 --json matrix.json"),
    "overlap": ("compile_guard.commands.overlap",
                "PP0 overlap rows O-01..O-03: D sweep, overlap signature classifier, recompute coupling",
                "Example: compile-guard overlap --trace trace.json --json overlap.json"),
}  # fmt: skip


def _version() -> str:
    from compile_guard import __version__

    torch = importlib.metadata.version("torch")  # the installed torch, without importing it
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
    return args.run(args)
