"""PP0: bounded queues, epoch fence, hard cut, recompute regimes, the overlap classifier.

Multi-process tests: PP0 topology, 2 ranks (rank0 = stage 0, rank1 = stage 1), gloo, CPU,
eager, 2 layers, through the launcher with a deadline. Timing figures are the overlap
command's job; these tests assert structure (bounds, drops, call counts, signatures).
"""

from __future__ import annotations

import json

import pytest

from engine.topology.overlap_metrics import chrome_trace, classify, summarise


def _pp0(run_ranks_argv, tmp_path, *args: str) -> dict:
    import sys

    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    result = run_ranks_argv(
        [sys.executable, "-m", "engine.topology.pp0", "--layers", "2", "--out", str(out), *args], deadline_s=120
    )
    assert result.ok, result.summary() + "\n" + result.ranks[0].log_tail
    return json.loads((out / "pp0-rank0.json").read_text())


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_queues_stay_within_their_bounds(run_ranks_argv, tmp_path, depth):
    """PP0, D_in = D_out = depth: every chunk is emitted once, in order; depths never exceed D."""
    run = _pp0(run_ranks_argv, tmp_path, "--depth", str(depth), "--chunks", "8")
    assert run["chunks_done"] == list(range(8)) and run["dropped"] == []
    assert run["max_depth"]["in_flight"] <= depth and run["max_depth"]["ready"] <= depth
    sends = [r["in_flight_at_send"] for k, r in run["records"].items() if int(k) >= 0]
    assert max(sends) == depth  # the pipeline does fill up to its bound
    assert all(r["observed_generator_calls"] == 4 for r in run["records"].values())  # R1: 4 steps, no recompute


def test_hard_cut_mid_stream_drops_the_stale_result(run_ranks_argv, tmp_path):
    """PP0, D=2, hard cut at chunk 3: chunk 2 is still in flight when the new epoch starts, so
    its result comes back stale — dropped, never decoded — and the stream goes on."""
    run = _pp0(run_ranks_argv, tmp_path, "--depth", "2", "--chunks", "6", "--hard-cut-at", "3")
    assert [d["chunk_index"] for d in run["dropped"]] == [2]
    drop = run["dropped"][0]
    assert drop["result_epoch"] < drop["current_epoch"] and drop["where"] == "in flight"
    assert run["chunks_done"] == [0, 1, 3, 4, 5]
    records = run["records"]
    assert records["3"]["cache_epoch"] == records["1"]["cache_epoch"] + 1  # the cut bumped the epoch once
    assert "tEmit" not in records["2"]  # never decoded


def test_recompute_regimes(run_ranks_argv, tmp_path):
    """PP0, D=2, R0a: every chunk after the first carries rank0's context (one extra call)."""
    run = _pp0(run_ranks_argv, tmp_path, "--depth", "2", "--chunks", "5", "--recompute", "r0a")
    calls = {int(k): r["observed_generator_calls"] for k, r in run["records"].items() if int(k) >= 0}
    assert calls == {0: 4, 1: 5, 2: 5, 3: 5, 4: 5}  # 4 steps (+1 recompute from chunk 1 on)
    # R0a's dependency: envelope k waits for rank0's decode of k-1, so one chunk at a time
    assert run["max_depth"]["in_flight"] == 1


@pytest.mark.parametrize("schedule, expected", [("healthy", "healthy"), ("serial", "serialized")])
def test_classifier_on_both_schedules(run_ranks_argv, tmp_path, schedule, expected):
    run = _pp0(run_ranks_argv, tmp_path, "--depth", "2", "--chunks", "10", "--schedule", schedule)
    label, why = classify(run["summary"])
    assert label == expected, why


def _synthetic(stage0: float, stage1: float, period: float, idle: float, in_flight: int) -> dict:
    records, t = {}, 0.0
    for k in range(8):
        t += period / 1e3
        records[str(k)] = {
            "tA0": t - 0.05,
            "tA1": t - 0.05 + stage0 / 2e3,
            "tDec0": t - stage0 / 2e3,
            "tEmit": t,
            "tSend": t - 0.05,
            "tB_ms": stage1,
            "t_mesh_idle_ms": idle,
            "in_flight_at_send": in_flight,
            "ready_at_send": 0,
            "tB0": t - 0.04,
            "tB1": t - 0.04 + stage1 / 1e3,
        }
    return records


def test_summary_and_classifier_on_known_numbers():
    healthy = summarise(_synthetic(stage0=20, stage1=50, period=52, idle=0.3, in_flight=2), warmup=2)
    assert healthy["chunks_measured"] == 6  # chunks 2..7: chunks 0 and 1 are warm-up (8 chunks - 2)
    assert healthy["overlap_score"] == pytest.approx((20 + 50 - 52) / 20)  # hidden / min(stage0, stage1)
    assert healthy["period_over_max_stage"] == pytest.approx(52 / 50)
    assert classify(healthy)[0] == "healthy"
    serial = summarise(_synthetic(stage0=20, stage1=50, period=71, idle=19, in_flight=1), warmup=2)
    assert serial["overlap_score"] == 0.0
    assert classify(serial)[0] == "serialized"


def test_chrome_trace_has_a_track_per_stage_and_queue():
    trace = chrome_trace(_synthetic(stage0=20, stage1=50, period=52, idle=0.3, in_flight=2))
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["pid"] for e in spans} == {0, 1}  # stage 0 (build, decode) and stage 1 (generate)
    assert any(e["ph"] == "C" and e["pid"] == 2 for e in trace["traceEvents"])  # queue depth counter
    assert all(e["dur"] >= 0 for e in spans)
