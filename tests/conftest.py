"""Shared helpers: every multi-process test goes through the launcher with a deadline,
and asserts afterwards that nothing it started is still alive."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from compile_guard.launcher import LaunchResult, LaunchSpec, launch

REPO = Path(__file__).resolve().parent.parent
RANK_PROGRAMS = str(REPO / "tests" / "rank_programs.py")


def sessions_alive(session_ids: set[int]) -> list[int]:
    """pids of live processes whose session is one of `session_ids` (ranks lead their own)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = text.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) in session_ids:
            alive.append(int(stat.parent.name))
    return alive


def processes_with_env(entry: str) -> list[int]:
    """pids of live processes whose environment holds `entry` (e.g. MASTER_PORT=1234)."""
    found = []
    needle = entry.encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def assert_nothing_left(result: LaunchResult) -> None:
    pids = {r.pid for r in result.ranks}
    left = sorted(set(sessions_alive(pids)) | set(processes_with_env(f"MASTER_PORT={result.master_port}")))
    assert not left, f"processes outlived the launch: {left}\n{result.summary()}"


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
        result = launch(spec)
        assert_nothing_left(result)
        return result

    return run


@pytest.fixture
def run_ranks(run_ranks_argv):
    """run_ranks(rank_program_args, ...): a program of tests/rank_programs.py on every rank."""

    def run(args: list[str], **kwargs) -> LaunchResult:
        return run_ranks_argv([sys.executable, RANK_PROGRAMS, *args], **kwargs)

    return run
