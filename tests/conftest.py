"""Shared helpers: every multi-process test goes through the launcher with a deadline,
and asserts afterwards that nothing it started is still alive."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from compile_guard.launcher import LaunchResult, LaunchSpec
from compile_guard.pytest_plugin import launch_checked

REPO = Path(__file__).resolve().parent.parent
RANK_PROGRAMS = str(REPO / "tests" / "rank_programs.py")
# A test waits on a CLI longer than the CLI's own hard deadline for its ranks (RunSpec.deadline_s,
# 600 s), and pytest's timeout (pyproject) is longer still: the innermost deadline always fires first.
CLI_TIMEOUT_S = 660.0


@pytest.fixture
def run_ranks_argv(tmp_path):
    """run_ranks_argv(argv, nprocs=2, deadline_s=60, **spec) -> LaunchResult, nothing left."""

    def run(argv: list[str], *, nprocs: int = 2, deadline_s: float = 60.0, **kwargs) -> LaunchResult:
        spec = LaunchSpec(
            argv=argv,
            nprocs=nprocs,
            deadline_s=deadline_s,
            log_dir=tmp_path / "logs",
            cwd=REPO,
            **kwargs,
        )
        return launch_checked(spec)  # the pytest plugin's own helper: fails on leftovers

    return run


@pytest.fixture
def run_ranks(run_ranks_argv):
    """run_ranks(rank_program_args, ...): a program of tests/rank_programs.py on every rank."""

    def run(args: list[str], **kwargs) -> LaunchResult:
        return run_ranks_argv([sys.executable, RANK_PROGRAMS, *args], **kwargs)

    return run
