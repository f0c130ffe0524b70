"""The operator matrix, one test per row of compile_guard.matrix.rows.ROWS.

Topology per row: TP=2, gloo, CPU, eager (see each Row). Each row runs engine.topology.tp on 2
rank processes through the launcher with a deadline; the test asserts the row's verdict:
exit codes, the detecting event, the job going on where it must, nothing left behind.
Time-to-fail is a figure (printed by `python -m compile_guard matrix`), not asserted here.
"""

from __future__ import annotations

import subprocess

import pytest

from compile_guard.launch.launcher import LaunchResult, RankResult
from compile_guard.matrix.rows import CONTINUES_CHECK, ROWS, ROWS_BY_ID
from compile_guard.matrix.runner import judge, run_row

SMOKE_ROWS = ("OM-04", "CD-01")  # a parity row and a compile-divergence row stay in `make test-fast`


@pytest.mark.parametrize(
    "row", [pytest.param(r, id=r.id, marks=pytest.mark.smoke if r.id in SMOKE_ROWS else ()) for r in ROWS]
)
def test_row(row, tmp_path, processes):
    result = run_row(row, tmp_path)
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
    verdict = judge(row, _fake_result(tmp_path, [0, 0]), [[], []])
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
    verdict = judge(row, _fake_result(tmp_path, [0, 0]), [[rejected, done], []])
    assert any("job did not go on" in p for p in verdict.problems)
    ok = judge(row, _fake_result(tmp_path, [0, 0]), [[rejected, {**done, "chunks_done": [0, 2, 3]}], []])
    assert ok.passed, ok.problems


def test_rows_are_parity_safe():
    """Hooks go to every rank alike; only rows whose fault *is* a per-rank difference use rank_env: caught by a
    parity handshake, or a healthy per-rank difference the check must pass (CD-09-host: host settings)."""
    for row in ROWS:
        assert not any(k.startswith("COMPILE_GUARD_TEST_") for env in row.rank_env.values() for k in env), row.id
        if row.rank_env:
            healthy = row.expect.kind == CONTINUES_CHECK and row.expect.baseline == "pass"
            assert row.expect.event == "parity_mismatch" or healthy, row.id
