"""The pytest plugin, used the way a user would (its fixture comes from the pytest11 entry point).

Topology of each run: 2 ranks, gloo, CPU, through rank_runner's launcher with a deadline."""

from __future__ import annotations

import pytest

from compile_guard import assert_compile_health
from compile_guard.flow.scenarios import resolve
from compile_guard.health import baseline as bl


@pytest.mark.smoke
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
    factors = bl.Factors(**{k: 2 if k == "world_size" else "x" for k in bl.FACTOR_KEYS})
    path = tmp_path / "b.json"
    bl.write(path, bl.Baseline(factors=factors, metrics=metrics[0], break_sites=[]))
    assert_compile_health(metrics, path)  # same health: passes
    worse = [{**m, "graph_breaks": 2, "unique_graphs": 3} for m in metrics]
    with pytest.raises(AssertionError, match=r"graph_breaks: 0 -> \[2, 2\] \(regression\)"):
        assert_compile_health(worse, path)


def test_compile_guard_check_guards_a_model_in_one_line(compile_guard_check, tmp_path, tp_mlp_baselines):
    """TP=2 over 2 ranks, gloo, CPU, aot_eager: with no baseline the test fails saying so (nothing launched); the
    worked example's good factory passes against the baseline refreshed for it (one launch)."""
    target = "docs.examples.tp_mlp:good"
    with pytest.raises(pytest.fail.Exception, match="no baseline for docs.examples.tp_mlp:good"):
        compile_guard_check(target, baselines=tmp_path, backend="aot_eager")
    # the judging flags pass through; timings shown, not judged here (tests/test_timings.py judges them)
    report = compile_guard_check(target, baselines=tp_mlp_baselines, backend="aot_eager", judging={"timings": "report"})
    assert report.exit_code == 0 and "PASS" in report.text and "reported" in report.text


@pytest.mark.smoke
def test_compile_guard_check_fails_the_test_with_the_checks_report(compile_guard_check, tmp_path, monkeypatch):
    """In process: a check that judges a failure (here a cross-rank asymmetry) fails the test with the report;
    the real asymmetric run of `tp_mlp:rank_branch` is tests/test_target.py's."""
    from compile_guard.flow import check_flow
    from compile_guard.flow.check_run import CheckRun
    from compile_guard.flow.report import Report

    run = CheckRun(
        job=resolve(scenario_name="", target="docs.examples.tp_mlp:rank_branch", nprocs=2, backend="aot_eager"),
        result=None,
        reports=None,
        log_dir=tmp_path,
    )
    failed = Report(exit_code=1, text="cross-rank asymmetry: CompileDivergence: ...", data={})
    monkeypatch.setattr(check_flow, "run_and_judge", lambda *a, **k: check_flow.Judged(report=failed, run=run))
    monkeypatch.setattr("compile_guard.commands.pytest_plugin.leftover_pids", lambda result: [])
    with pytest.raises(pytest.fail.Exception, match=r"failed \(exit 1\):\ncross-rank asymmetry"):
        compile_guard_check("docs.examples.tp_mlp:rank_branch", baselines=tmp_path, backend="aot_eager")
