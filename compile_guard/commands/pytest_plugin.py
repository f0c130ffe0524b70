"""pytest plugin (entry point `pytest11`): guard a model in one line, run functions on N ranks.

    def test_my_model(compile_guard_check):
        compile_guard_check("mypkg.guard:factory", baselines="ci/baselines", backend="aot_eager")

    def test_my_block(rank_runner):
        run = rank_runner("mypkg.tests.programs:allreduce_once", nprocs=2)
        assert run.ok and run.values == [3.0, 3.0]

    def test_health(tmp_path):
        assert_compile_health(probe_or_metrics, "ci/baselines/mine.json")

`compile_guard_check` is the whole `check --target`: handshakes, warmup, the cross-rank gather,
the baseline diff and the policy; the test fails with the check's report.

`rank_runner` launches the ranks through compile_guard's launcher — each in its own
session, a hard deadline, the whole group killed on the first failure — and fails the test
if any process outlives the run. The test process itself never joins a collective.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from compile_guard.health.assertion import assert_compile_health
from compile_guard.launch.launcher import LaunchResult, LaunchSpec, launch, python_module_argv
from compile_guard.launch.leftovers import leftover_pids

__all__ = ["RankRun", "assert_compile_health", "compile_guard_check", "launch_checked", "rank_runner"]


@dataclass(frozen=True, kw_only=True)
class RankRun:
    result: LaunchResult
    values: list[Any]  # each rank's return value (None where a rank returned nothing)

    @property
    def ok(self) -> bool:
        return self.result.ok


def launch_checked(spec: LaunchSpec) -> LaunchResult:
    """launch(), then fail loudly if anything it started is still alive."""
    result = launch(spec)
    left = leftover_pids(result)
    if left:
        pytest.fail(f"processes outlived the launch: {left}\n{result.summary()}")
    return result


@pytest.fixture
def rank_runner(tmp_path: Path) -> Callable[..., RankRun]:
    """rank_runner("pkg.mod:func", nprocs=2, deadline_s=60, env=None, rank_env=None) -> RankRun."""
    runs = itertools.count()

    def run(func: str, *, nprocs: int = 2, deadline_s: float = 60.0, **spec: Any) -> RankRun:
        from compile_guard.ranks import call

        out = tmp_path / f"rank_run{next(runs)}"
        result = launch_checked(
            LaunchSpec(
                argv=python_module_argv(call, "--func", func, "--out", str(out)),
                nprocs=nprocs,
                deadline_s=deadline_s,
                log_dir=out,
                **spec,
            )
        )
        paths = [out / f"result-rank{r}.json" for r in range(nprocs)]
        return RankRun(result=result, values=[json.loads(p.read_text()) if p.exists() else None for p in paths])

    return run


@pytest.fixture
def compile_guard_check(tmp_path: Path) -> Callable[..., Any]:
    """compile_guard_check("pkg.mod:factory", baselines=DIR, nprocs=2, backend="inductor", strict=False,
    allow_improvement=False, quality=None, judging=None) -> the report; fails the test with the report unless the
    check passes. `quality`: compile_guard.quality.options.Measure's fields (e.g. {"speed": False}); `judging`:
    Judging's (e.g. {"speed_factor": 1.3}); both as `check`'s flags, their defaults when None."""
    runs = itertools.count()

    def check(
        target: str,
        *,
        baselines: str | Path,
        nprocs: int = 2,
        backend: str = "inductor",
        strict: bool = False,
        allow_improvement: bool = False,
        quality: dict[str, Any] | None = None,
        judging: dict[str, Any] | None = None,
    ) -> Any:
        from compile_guard.flow.check_flow import run_and_judge
        from compile_guard.flow.request import CheckRequest
        from compile_guard.flow.scenarios import resolve
        from compile_guard.launch.modes import Launched
        from compile_guard.quality.options import Judging, Measure

        job = resolve(scenario_name="", target=target, nprocs=nprocs, backend=backend)
        job = job.replace(quality=Measure(**(quality or {})))
        from compile_guard.ranks import check as check_program

        request = CheckRequest(
            job=job,
            program=check_program,
            baselines=Path(baselines),
            allow_improvement=allow_improvement,
            strict=strict,
            log_dir=tmp_path / f"compile_guard_check{next(runs)}",
            judging=Judging(**(judging or {})),
        )
        judged = run_and_judge(request, Launched())  # the test process supervises ranks of its own
        if judged.run is None:
            pytest.fail(f"no baseline for {target} to judge against: {judged.report.text}", pytrace=False)
        left = leftover_pids(judged.run.result)
        if left:
            pytest.fail(f"processes outlived the check: {left}\n{judged.run.result.summary()}")
        report = judged.report
        if report.exit_code != 0:
            pytest.fail(
                f"compile_guard check of {target} failed (exit {report.exit_code}):\n{report.text}", pytrace=False
            )
        return report

    return check
