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
from compile_guard.flow.junit import Case, write_junit
from tests.conftest import CLI_TIMEOUT_S, REPO

SURFACE = {
    "": ["--help", "--version"],
    "check": [
        "--allow-improvement",
        "--alpha",
        "--backend",
        "--baselines",
        "--compile-factor",
        "--compile-noise",
        "--compile-time",
        "--dump-dir",
        "--eager-ledger",
        "--help",
        "--html",
        "--json",
        "--junit",
        "--list",
        "--log-dir",
        "--memory-factor",
        "--no-accuracy",
        "--no-input-agreement",
        "--no-memory",
        "--no-parity",
        "--no-quality",
        "--no-speed",
        "--nproc",
        "--repeats",
        "--scenario",
        "--speed-factor",
        "--speed-noise",
        "--stall-s",
        "--strict",
        "--summary",
        "--target",
        "--timings",
        "--tolerance",
    ],
    "repro": [
        "--backend",
        "--calls",
        "--deadline-s",
        "--help",
        "--json",
        "--log-dir",
        "--modes",
        "--nproc",
        "--warmup",
    ],
    "matrix": ["--help", "--html", "--json", "--junit", "--list", "--log-dir", "--rows"],
    "overlap": ["--chunks", "--help", "--json", "--log-dir", "--trace"],
    "baseline": ["--help"],
    "baseline refresh": [
        "--backend",
        "--baselines",
        "--compile-time",
        "--dump-dir",
        "--eager-ledger",
        "--help",
        "--log-dir",
        "--no-accuracy",
        "--no-input-agreement",
        "--no-memory",
        "--no-parity",
        "--no-quality",
        "--no-speed",
        "--nproc",
        "--repeats",
        "--runs",
        "--scenario",
        "--stall-s",
        "--target",
        "--tolerance",
    ],
    "baseline show": ["--baselines", "--file", "--help", "--scenario"],
    "baseline diff": ["--help", "--html", "a", "b"],
}


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
    return subprocess.run(
        [sys.executable, "-m", "compile_guard", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )


def test_version_names_the_torch_it_runs_on(quick_process):
    import torch

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("compile-guard 0.1.0 (torch ")
    assert torch.__version__ in proc.stdout


def test_every_subcommand_help_has_an_example(quick_process):
    for command in ("check", "matrix", "repro", "overlap", "baseline refresh", "baseline show", "baseline diff"):
        proc = _cli(*command.split(), "--help")
        assert proc.returncode == 0 and "Example: compile-guard" in " ".join(proc.stdout.split()), command


def test_check_junit_carries_the_regression_diff(tmp_path, monkeypatch):
    """In process: `check --junit` over a judged run whose ranks broke at every collective (graph_breaks 10 against
    tp2-aot's 0; the real run of that fault is matrix row C-02-disable) — the JUnit file carries the diff."""
    from compile_guard import cli
    from compile_guard.commands import check
    from compile_guard.contracts.rank_job import RankJob
    from compile_guard.flow import check_flow, report
    from compile_guard.flow.judge import judge
    from compile_guard.flow.request import CheckRequest, find_baseline
    from compile_guard.flow.scenarios import SCENARIOS
    from compile_guard.health import baseline as bl
    from compile_guard.ranks import check as check_program
    from tests.test_check import _run_of

    spec = SCENARIOS["tp2-aot"]
    request = CheckRequest(job=RankJob(spec=spec), program=check_program, baselines=bl.DEFAULT_DIR)
    found = find_baseline(request)
    run = _run_of({**found.baseline.metrics, "graph_breaks": 10, "break_reasons": {"disable": 10}}, spec)
    judged = report.report_of(judge(run.reports, found, request), judging=request.judging, log_dir=None)
    monkeypatch.setattr(check, "run_and_judge", lambda *a, **k: check_flow.Judged(report=judged, run=run))
    junit = tmp_path / "check.xml"
    summary = tmp_path / "summary.md"
    assert cli.main(["check", "--scenario", "tp2-aot", "--junit", str(junit), "--summary", str(summary)]) == 1
    assert (
        "FAIL (exit 1)" in summary.read_text()
        and "| graph_breaks | 0 | 10 | 10 | **regression** |" in summary.read_text()
    )  # the CI job's page: the same rows
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert suite.get("name") == "check.tp2-aot" and int(suite.get("failures")) == 2  # graph_breaks, break_reasons
    failure = cases["graph_breaks"].find("failure")
    assert failure is not None and "baseline 0 -> per rank [10, 10]" in failure.text
    assert cases["steady_recompiles"].find("failure") is None  # unchanged metrics pass


def test_matrix_junit_one_case_per_row(tmp_path, monkeypatch):
    """In process: `matrix --rows OM-01,OM-04 --junit` writes one case per row, failures with their problems (the
    rows' real runs are tests/test_matrix.py's)."""
    from compile_guard import cli
    from compile_guard.commands import matrix
    from compile_guard.matrix.runner import RowResult

    def fake_row(row, log_root, programs, healthy=None):
        problems = ["rank 1 exited 0, expected one of [10]"] if row.id == "OM-04" else []
        return RowResult(
            id=row.id,
            passed=not problems,
            problems=problems,
            observed="",
            signature="",
            ttf_s=0.1,
            detect_s=0.1,
            ttf_budget_s=1.0,
            leftover_pids=[],
            wall_s=1.0,
            log_dir=str(log_root),
        )

    monkeypatch.setattr(matrix, "run_row", fake_row)
    junit = tmp_path / "matrix.xml"
    assert cli.main(["matrix", "--rows", "OM-01,OM-04", "--junit", str(junit), "--log-dir", str(tmp_path)]) == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert [c.get("name") for c in suite.findall("testcase")] == ["OM-01", "OM-04"]
    assert suite.get("failures") == "1" and "expected one of [10]" in suite.findall("testcase")[1].find("failure").text


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["check", "--target", "..x:y"], {}, "is not 'package.module:factory'"),
        (["check", "--list"], {"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc' is invalid"),
        (["repro", "--deadline-s", "nan"], {}, "nan is invalid"),
        (["repro", "--deadline-s", "0"], {}, "0 is invalid"),
        (["check", "--nproc", "0"], {}, "0 is invalid"),
        (["matrix", "--rows", ""], {}, "--rows is empty"),
        (["baseline", "show", "--file", "/dev/null"], {}, "is not a regular file"),
    ],
)
def test_bad_input_exits_2_naming_it(argv, env, message, quick_process):
    proc = _cli(*argv, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


def test_junit_carries_control_characters_escaped(tmp_path):
    path = tmp_path / "t.xml"
    write_junit(path, "s", [Case(name="run", classname="c", failure="log tail \x00 with \x1b[31m color")])
    failure = ET.parse(path).getroot().find("testsuite/testcase/failure")  # parses: nothing raw left
    assert failure.text == "log tail \\x00 with \\x1b[31m color"
