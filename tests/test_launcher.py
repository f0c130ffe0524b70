"""Launcher: real rank processes on gloo, 2 ranks, CPU. Each fault must end the run well
before the deadline (or exactly at it, for a run that blocks), name the failing rank,
and leave no process behind."""

from __future__ import annotations

import sys

import pytest

from compile_guard.commands.pytest_plugin import launch_checked
from compile_guard.launch.launcher import LaunchSpec

PG_TIMEOUT_S = 5.0  # rank programs' process-group timeout: a frozen peer is seen after it
DEADLINE_S = 60.0


def _loop(fault: str, rank: int = 1) -> list[str]:
    return ["collective_loop", "--fault", fault, "--fault-rank", str(rank), "--timeout-s", str(PG_TIMEOUT_S)]


def test_clean_run_is_ok(run_ranks):
    """TP-less 2-rank all-reduce loop, gloo: every rank exits 0."""
    result = run_ranks(_loop("none"))
    assert result.ok, result.summary()
    assert [r.returncode for r in result.ranks] == [0, 0]
    assert "20 iterations done" in result.ranks[0].log_tail


@pytest.mark.smoke
def test_rank_that_raises(run_ranks):
    """2 ranks, gloo: rank 1 raises mid-loop; rank 0 sees the dead peer within ~1 s."""
    result = run_ranks(_loop("raise"))
    assert result.outcome == "rank_failed"
    assert result.first_failed == 1
    assert "injected failure on rank 1" in result.ranks[1].log_tail
    # gloo reports a closed peer fast; grace (2 s) bounds the rest.
    assert result.duration_s < DEADLINE_S / 2, result.summary()


def test_rank_killed_with_sigkill(run_ranks):
    """2 ranks, gloo: rank 1 SIGKILLs itself mid-loop."""
    result = run_ranks(_loop("sigkill"))
    assert result.first_failed == 1
    assert result.ranks[1].signal == "SIGKILL"
    assert not result.ranks[1].killed_by_launcher
    assert result.duration_s < DEADLINE_S / 2, result.summary()


def test_rank_frozen_with_sigstop(run_ranks):
    """2 ranks, gloo: rank 1 SIGSTOPs itself; rank 0 times out after PG_TIMEOUT_S and
    fails first; the launcher then kills the frozen rank."""
    result = run_ranks(_loop("sigstop"))
    assert result.first_failed == 0
    assert result.ranks[1].killed_by_launcher
    assert result.ranks[1].signal == "SIGKILL"
    # ~PG_TIMEOUT_S + grace + start-up, far below the deadline
    assert result.duration_s < DEADLINE_S / 2, result.summary()


def test_rank_that_never_joins(run_ranks):
    """2 ranks, gloo: rank 1 never calls init_process_group; rank 0's rendezvous times out."""
    result = run_ranks(_loop("never_join"))
    assert result.first_failed == 0
    assert result.ranks[1].killed_by_launcher
    assert result.duration_s < DEADLINE_S / 2, result.summary()


def test_deadline_kills_a_blocked_run(run_ranks):
    """2 ranks, gloo: both ranks park forever without failing; only the deadline ends it."""
    deadline = 8.0
    result = run_ranks(_loop("block"), deadline_s=deadline)
    assert result.outcome == "deadline"
    assert result.first_failed is None
    assert all(r.killed_by_launcher and r.signal == "SIGKILL" for r in result.ranks)
    assert deadline <= result.duration_s < deadline + 5.0, result.summary()


def test_rank_env_overrides_reach_only_their_rank(tmp_path, processes):
    """3 ranks, no collectives: rank 2 alone gets CG_PROBE=x; each rank exits 0 iff it saw
    what it should, so a leaked or missing override fails the run."""
    script = (
        "import os, sys; r = int(os.environ['RANK']);"
        "sys.exit(0 if os.environ.get('CG_PROBE') == ('x' if r == 2 else 'base') else 7)"
    )
    result = launch_checked(
        LaunchSpec(
            argv=[sys.executable, "-c", script],
            nprocs=3,
            deadline_s=30,
            log_dir=tmp_path,
            env={"CG_PROBE": "base"},
            rank_env={2: {"CG_PROBE": "x"}},
        )
    )
    assert result.ok, result.summary()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"nprocs": 0}, "nprocs"),
        ({"deadline_s": 0}, "deadline_s"),
        ({"grace_s": -1}, "grace_s"),
        ({"rank_env": {5: {}}}, "rank_env"),
        ({"argv": []}, "argv"),
    ],
)
def test_bad_spec_is_rejected(tmp_path, kwargs, field):
    base = dict(argv=["true"], nprocs=2, deadline_s=5, log_dir=tmp_path)
    base.update(kwargs)
    with pytest.raises(ValueError, match=field):
        LaunchSpec(**base)
