"""The CLI surface, frozen: adding, removing or renaming a flag or subcommand is a visible diff
here. Plus --version and the JUnit outputs, parsed back."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from compile_guard.cli import build_parser
from compile_guard.junit import Case, write_junit
from tests.conftest import CLI_TIMEOUT_S, REPO

SURFACE = {
    "": ["--help", "--version"],
    "check": ["--agree-window", "--allow-improvement", "--backend", "--baselines", "--dump-dir", "--eager-ledger",
              "--help", "--json", "--junit", "--list", "--log-dir", "--no-input-agreement", "--nproc", "--scenario",
              "--stall-s", "--strict", "--target"],
    "repro": ["--backend", "--calls", "--deadline-s", "--help", "--json", "--log-dir", "--modes", "--nproc",
              "--warmup"],
    "matrix": ["--help", "--json", "--junit", "--list", "--log-dir", "--rows"],
    "overlap": ["--chunks", "--help", "--json", "--log-dir", "--trace"],
    "baseline": ["--help"],
    "baseline refresh": ["--agree-window", "--backend", "--baselines", "--dump-dir", "--eager-ledger", "--help",
                         "--log-dir", "--no-input-agreement", "--nproc", "--scenario", "--stall-s", "--target"],
    "baseline show": ["--baselines", "--file", "--help", "--scenario"],
    "baseline diff": ["--help", "a", "b"],
}  # fmt: skip


def _surface(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    flags = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_surface(sub, f"{prefix} {name}".strip()))
        elif action.option_strings:
            flags.extend(o for o in action.option_strings if o != "-h")  # -h is --help's alias everywhere
        else:
            flags.append(action.dest)
    found[prefix] = sorted(flags)
    return found


def test_cli_surface_is_frozen():
    assert _surface(build_parser()) == SURFACE


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compile_guard", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, env={**os.environ, **(env or {})})  # fmt: skip


def test_version_names_the_torch_it_runs_on():
    import torch

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("compile-guard 0.1.0 (torch ")
    assert torch.__version__ in proc.stdout


def test_every_subcommand_help_has_an_example():
    for command in ("check", "matrix", "repro", "overlap", "baseline refresh", "baseline show", "baseline diff"):
        proc = _cli(*command.split(), "--help")
        assert proc.returncode == 0 and "Example: compile-guard" in " ".join(proc.stdout.split()), command


def test_check_junit_carries_the_regression_diff(tmp_path):
    """TP=2, gloo, aot_eager: collectives behind disable() on every rank against tp2-aot's baseline."""
    junit = tmp_path / "check.xml"
    proc = _cli("check", "--scenario", "tp2-aot", "--junit", str(junit),
                env={"COMPILE_GUARD_COLLECTIVE_PATH": "disabled_inplace"})  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert suite.get("name") == "check.tp2-aot" and int(suite.get("failures")) >= 4
    failure = cases["graph_breaks"].find("failure")
    assert failure is not None and "baseline 0 -> per rank [10, 10]" in failure.text
    assert cases["steady_recompiles"].find("failure") is None  # unchanged metrics pass


def test_matrix_junit_one_case_per_row(tmp_path):
    """TP=2, gloo, eager: two rows through the matrix runner."""
    junit = tmp_path / "matrix.xml"
    proc = _cli("matrix", "--rows", "OM-01,OM-04", "--junit", str(junit))
    assert proc.returncode == 0, proc.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert [c.get("name") for c in suite.findall("testcase")] == ["OM-01", "OM-04"]
    assert suite.get("failures") == "0"


@pytest.mark.parametrize("argv, env, message", [
    (["check", "--target", "..x:y"], {}, "is not 'package.module:factory'"),
    (["check", "--list"], {"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc' is invalid"),
    (["repro", "--deadline-s", "nan"], {}, "nan is invalid"),
    (["repro", "--deadline-s", "0"], {}, "0 is invalid"),
    (["check", "--nproc", "0"], {}, "0 is invalid"),
    (["matrix", "--rows", ""], {}, "--rows is empty"),
    (["baseline", "show", "--file", "/dev/null"], {}, "is not a regular file"),
])  # fmt: skip
def test_bad_input_exits_2_naming_it(argv, env, message):
    proc = _cli(*argv, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


def test_junit_carries_control_characters_escaped(tmp_path):
    path = tmp_path / "t.xml"
    write_junit(path, "s", [Case(name="run", classname="c", failure="log tail \x00 with \x1b[31m color")])
    failure = ET.parse(path).getroot().find("testsuite/testcase/failure")  # parses: nothing raw left
    assert failure.text == "log tail \\x00 with \\x1b[31m color"
