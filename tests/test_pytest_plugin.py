"""The pytest plugin, used the way a user would (its fixture comes from the pytest11 entry point).

Topology of each run: 2 ranks, gloo, CPU, through rank_runner's launcher with a deadline."""

from __future__ import annotations

import pytest

from compile_guard.health import baseline as bl
from compile_guard.pytest_plugin import assert_compile_health


def test_rank_runner_returns_each_ranks_value(rank_runner):
    run = rank_runner("tests.rank_functions:allreduce_rank_plus_one", nprocs=2)
    assert run.ok, run.result.summary()
    assert run.values == [3.0, 3.0]  # (0 + 1) + (1 + 1) on both ranks


def test_rank_runner_reports_a_failing_rank(rank_runner):
    run = rank_runner("tests.rank_functions:raises", nprocs=2, deadline_s=30)
    assert not run.ok and run.result.first_failed is not None
    assert "fails on purpose" in run.result.ranks[run.result.first_failed].log_tail
    assert run.values == [None, None]


def test_assert_compile_health_against_a_baseline(rank_runner, tmp_path):
    run = rank_runner("tests.rank_functions:compiled_allreduce_health", nprocs=2)
    assert run.ok, run.result.summary()
    metrics = run.values
    assert [m["collectives_in_graphs"] for m in metrics] == [1, 1]  # funcol: inside the one graph
    factors = {k: "x" for k in bl.FACTOR_KEYS}
    path = tmp_path / "b.json"
    bl.write(path, bl.Baseline(factors=factors, metrics=metrics[0], break_sites=[]))
    assert_compile_health(metrics, path)  # same health: passes
    worse = [{**m, "graph_breaks": 2, "unique_graphs": 3} for m in metrics]
    with pytest.raises(AssertionError, match=r"graph_breaks: 0 -> \[2, 2\] \(regression\)"):
        assert_compile_health(worse, path)
