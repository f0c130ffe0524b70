"""The operator matrix, one test per row of compile_guard.matrix.rows.ROWS.

Topology per row: TP=2, gloo, CPU, eager (see each Row). Each row runs engine.topology.tp on 2
rank processes through the launcher with a deadline; the test asserts the row's verdict:
exit codes, the detecting event, the job going on where it must, nothing left behind.
Time-to-fail is a figure (printed by `python -m compile_guard matrix`), not asserted here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from compile_guard.launch.launcher import LaunchResult, RankResult
from compile_guard.matrix.rows import CONTINUES_CHECK, ROWS, ROWS_BY_ID
from compile_guard.matrix.runner import Programs, row_outcome, run_row
from compile_guard.matrix.this_run import APPLIED, Healthy, HealthyBaselines, not_applied
from compile_guard.ranks import check, serve

PROGRAMS = Programs(check=check, serve=serve)  # what `compile-guard matrix` runs the rows with
SMOKE_ROWS = ("OM-04", "CD-01")  # a parity row and a compile-divergence row stay in `make test-fast`


@pytest.fixture(scope="session")
def healthy(tmp_path_factory) -> HealthyBaselines:
    """The NU rows' healthy baseline, written by the first NU row of the session on this machine and shared by
    the rest (a committed baseline holds another machine's timings). Topology: TP=2, gloo, CPU, inductor."""
    return HealthyBaselines(tmp_path_factory.mktemp("healthy"), check)


@pytest.mark.parametrize(
    "row", [pytest.param(r, id=r.id, marks=pytest.mark.smoke if r.id in SMOKE_ROWS else ()) for r in ROWS]
)
def test_row(row, tmp_path, processes, healthy):
    result = run_row(row, tmp_path, PROGRAMS, healthy)
    if result.not_run:
        pytest.skip(result.not_run)
    assert result.passed, "\n".join(result.problems) + f"\nlogs: {result.log_dir}"
    assert result.leftover_pids == []


def _reaped_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _fake_result(tmp_path, rcs) -> LaunchResult:
    gone = _reaped_pid()  # a pid whose session no longer exists
    ranks = tuple(
        RankResult(
            rank=r,
            pid=gone,
            returncode=rc,
            signal=None,
            killed_by_launcher=False,
            duration_s=1.0,
            log_path=tmp_path / f"rank{r}.log",
            log_tail="",
            failure=None,
            failed_at_s=None,
        )
        for r, rc in enumerate(rcs)
    )
    return LaunchResult(ranks=ranks, outcome="ok", first_failed=None, duration_s=1.0, master_port=1, started_at=0.0)


def test_judge_rejects_wrong_exit_codes_and_missing_events(tmp_path, quick_process):
    """The judge itself can fail: OM-11 with clean exits and no digest event is two problems."""
    row = ROWS_BY_ID["OM-11"]
    verdict = row_outcome(row, _fake_result(tmp_path, [0, 0]), [[], []])
    assert not verdict.passed
    assert any("rank 0 exited 0, expected one of [11]" in p for p in verdict.problems)
    assert any("logged no digest_mismatch event" in p for p in verdict.problems)


def test_judge_requires_the_job_to_go_on(tmp_path, quick_process):
    """A preflight row whose run lost a chunk beyond the rejected one fails."""
    row = ROWS_BY_ID["OM-01"]
    rejected = {
        "event": "preflight_rejected",
        "t": 1.0,
        "stage": "meta_encode",
        "key_path": "extras.on_done",
        "chunk_index": 1,
    }
    done = {"event": "run_done", "t": 2.0, "chunks_done": [0, 2]}
    verdict = row_outcome(row, _fake_result(tmp_path, [0, 0]), [[rejected, done], []])
    assert any("job did not go on" in p for p in verdict.problems)
    ok = row_outcome(row, _fake_result(tmp_path, [0, 0]), [[rejected, {**done, "chunks_done": [0, 2, 3]}], []])
    assert ok.passed, ok.problems


def test_rows_are_parity_safe():
    """Hooks go to every rank alike; only rows whose fault *is* a per-rank difference use rank_env: caught by a
    parity handshake, or a healthy per-rank difference the check must pass (CD-09-host: host settings)."""
    for row in ROWS:
        assert not any(k.startswith("COMPILE_GUARD_TEST_") for env in row.rank_env.values() for k in env), row.id
        if row.rank_env:
            healthy = row.expect.kind == CONTINUES_CHECK and row.expect.baseline == "pass"
            assert row.expect.event == "parity_mismatch" or healthy, row.id


def _compiled(loops: int = 1, **math: int) -> dict:
    """A graph_compiled event with what its generated code holds (compile_guard.health.issued.code_summary)."""
    counts = {"erf": 0, "tanh": 2, "exp": 2, **math}
    return {"event": "graph_compiled", "t": 1.0, "code": {"read": True, "kernels": 1, "loops": loops, "math": counts}}


def test_each_nu_fault_proves_it_reached_the_generated_code():
    """A row whose fault never reached the code fails as "fault not applied", before any verdict: each proof
    holds on the fault's code and fails on healthy code."""
    healthy = Healthy(baselines=Path("."), events=[[_compiled()], [_compiled()]])
    cases = {
        "NU-01": ([[_compiled(erf=1)], [_compiled(erf=1)]], [[_compiled()], [_compiled()]]),
        "NU-02": ([[_compiled(loops=26)], [_compiled(loops=26)]], [[_compiled()], [_compiled(loops=26)]]),
        "NU-03": (
            [[_compiled(), {"event": "slow_pass", "t": 1.0}]] * 2,
            [[_compiled(), {"event": "slow_pass", "t": 1.0}], [_compiled()]],  # rank 1's compile ran no slow pass
        ),
        "NU-04": ([[_compiled()], [_compiled(tanh=3, exp=1)]], [[_compiled()], [_compiled()]]),
    }
    for row_id, (applied, healthy_code) in cases.items():
        row = ROWS_BY_ID[row_id]
        assert not_applied(row, applied, healthy) is None, row_id
        said = not_applied(row, healthy_code, healthy)
        assert said is not None and said.startswith("fault not applied: "), (row_id, said)
    assert not_applied(ROWS_BY_ID["NU-00"], [[], []], healthy) is None  # nothing injected: nothing to prove
    assert all(ROWS_BY_ID[r].expect.applied in APPLIED for r in cases)
