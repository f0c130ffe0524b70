"""The compile agreement and the eager ledger: their data (unit) and a user's serving loop (multi-process).

Multi-process topology: 2 ranks, one TP group of both, gloo, CPU, dynamo's eager backend
(tests/agreement_programs.py), each through the launcher with a deadline far beyond the
agreement's window, so a pass proves the stop came from the agreement, not the deadline.
"""

from __future__ import annotations

import sys

import pytest
import torch.distributed as dist

from compile_guard.agreement import statement as st
from compile_guard.agreement.channel import MAX_ENTRY_BYTES, ChannelError, SideChannel, decode, encode
from compile_guard.health.sites import break_title
from engine.errors import CollectiveMismatch, CompileDivergence, ProtocolError
from tests.conftest import REPO

PROGRAM = str(REPO / "tests" / "agreement_programs.py")
DEADLINE_S = 60.0  # the agreement's window is 1 s: a run that needs the deadline is a hang


@pytest.mark.parametrize("data, message", [
    (b"x" * (MAX_ENTRY_BYTES + 1), "over the 65536-byte limit"),
    (b"{not json", "is not JSON"),
    (b"[1, 2]", "is a JSON list, expected an object"),
    (b"\xff\xfe", "is not JSON"),
])  # fmt: skip
def test_a_peer_entry_that_is_not_a_small_json_object_is_a_clear_error(data, message):
    with pytest.raises(ChannelError, match=message):
        decode(data, what="rank 1's statement")


def test_entries_round_trip_as_canonical_json_and_never_exceed_the_limit():
    assert decode(encode({"b": 1, "a": [1, 2]}, what="x"), what="x") == {"a": [1, 2], "b": 1}
    with pytest.raises(ChannelError, match="over the"):
        encode({"big": "x" * MAX_ENTRY_BYTES}, what="my statement")


def test_the_verdict_is_written_once_and_wakes_every_rank():
    """A store in this process only (no collective): the first declare wins, the second reads it back."""
    store = dist.TCPStore("127.0.0.1", 0, 1, True)
    channel = SideChannel(store, prefix="t")
    first = channel.declare({"by": 0, "text": "first"}, (0, 1))
    second = channel.declare({"by": 1, "text": "second"}, (0, 1))
    assert first == second == {"by": 0, "text": "first"}
    assert channel.wait_wake(1, 1.0) == "verdict"
    assert channel.busy(1) == ""  # never set reads as "not compiling"
    channel.set_busy(1, "0/1")
    assert channel.busy(1) == "0/1"


def _statement(rank: int, collectives: list[dict], **fields) -> dict:
    base = {"n": 0, "rank": rank, "frame": {"name": "forward", "site": "m.py:1"}, "compile_id": "0/0",
            "fingerprint": "f", "schedule_digest": "d", "settings": {"dynamo.x": False}, "collectives": collectives,
            "breaks": []}  # fmt: skip
    return {**base, **fields}


def test_statements_name_the_differing_fields_and_the_first_differing_collective():
    ar = {"op": "all_reduce", "group": {"name": "1", "ranks": [0, 1]}, "shape": [16, 64], "dtype": "torch.float32",
          "reduce_op": "sum"}  # fmt: skip
    a = _statement(0, [ar, ar])
    b = _statement(1, [ar, {**ar, "shape": [17, 64], "site": "m.py:9"}], fingerprint="g", schedule_digest="e",
                   settings={"dynamo.x": True})  # fmt: skip
    assert st.differing([a, b]) == ["fingerprint", "schedule_digest", "settings"]
    first = st.first_differing_collective([a, b])
    assert first.startswith("#1: ") and "[16, 64]" in first and "[17, 64]" in first and "m.py:9" in first
    assert "settings.dynamo.x" in st.table([a, b])
    assert st.differing([a, _statement(1, [{**ar, "site": "elsewhere.py:3"}, ar])]) == []  # a site is not issued


def test_dynamo_reasons_are_made_one_line():
    raw = ("0/0: self.scale == 1.0 # h = gelu(self.up(x)) * self.scale # mp/x.py:47 in forward\nUser stack trace:\n"
           '  File "/work/docs/examples/x.py", line 47, in forward\n    h = gelu(self.up(x)) * self.scale')
    want = "guard failed: self.scale == 1.0 at docs/examples/x.py:47 | h = gelu(self.up(x)) * self.scale"
    assert st.guard_reason(raw) == want
    assert st.guard_reason(None) is None
    text = "Encountered graph break trying to trace CALL\n\nFailed to trace builtin operator\n  Explanation: x"
    assert break_title(text) == "Failed to trace builtin operator"


def _run(run_ranks_argv, *args: str):
    result = run_ranks_argv([sys.executable, PROGRAM, *args], deadline_s=DEADLINE_S)
    assert result.outcome != "deadline", result.summary()
    return result


def test_a_healthy_serving_loop_agrees_on_its_one_graph(run_ranks_argv):
    result = _run(run_ranks_argv, "compile")
    assert [r.returncode for r in result.ranks] == [0, 0], result.summary()
    for r in result.ranks:
        assert "{'graphs': 1, 'agreed': 1}" in r.log_path.read_text()  # one graph, agreed once, nothing after


def test_a_peer_that_compiles_for_longer_than_the_window_is_waited_for(run_ranks_argv):
    """Rank 1 reaches the backend 3 s late, three times the window (a long trace): dynamo's compile callbacks
    mark it busy on the store, so rank 0 keeps waiting instead of declaring it absent, and the two agree."""
    result = _run(run_ranks_argv, "compile", "--fault", "slow_compile")
    assert [r.returncode for r in result.ranks] == [0, 0], result.summary()
    assert all("{'graphs': 1, 'agreed': 1}" in r.log_path.read_text() for r in result.ranks)


def test_a_rank_only_recompile_mid_step_stops_both_ranks_before_the_new_graph_runs(run_ranks_argv):
    """Rank 1 alone recompiles (a guarded float changed) while rank 0 is inside graph 0's all-reduce: rank 1
    waits the 1 s window, declares, raises; rank 0's watcher stops it in the collective."""
    result = _run(run_ranks_argv, "compile", "--fault", "recompile")
    assert [r.returncode for r in result.ranks] == [CompileDivergence.exit_code] * 2, result.summary()
    text = result.ranks[1].log_path.read_text()
    assert "rank 0 compiled no graph #1 within 1.0s" in text
    assert "guard failed: self.scale == 1.0" in text and "agreement_programs.py" in text
    assert "stopped by rank 1's verdict" in result.ranks[0].log_path.read_text()


def test_an_oversized_peer_statement_is_a_protocol_error_not_a_hang(run_ranks_argv):
    result = _run(run_ranks_argv, "compile", "--fault", "garbled")
    assert [r.returncode for r in result.ranks] == [ProtocolError.exit_code] * 2, result.summary()
    assert "over the 65536-byte limit" in result.ranks[0].log_path.read_text()


def test_the_ledger_passes_a_symmetric_loop(run_ranks_argv):
    result = _run(run_ranks_argv, "ledger")
    assert [r.returncode for r in result.ranks] == [0, 0], result.summary()
    calls = 8 * 2  # steps x (all_reduce + broadcast), on the one watched group
    assert all(f": {calls}}}}}" in r.log_path.read_text() for r in result.ranks)


def test_the_ledger_stops_an_extra_eager_collective_before_it_is_issued(run_ranks_argv):
    """Rank 1's extra all_reduce meets rank 0's broadcast: without the ledger gloo aborts on the size
    mismatch; with it both ranks stop with both calls named."""
    result = _run(run_ranks_argv, "ledger", "--fault", "extra")
    assert [r.returncode for r in result.ranks] == [CollectiveMismatch.exit_code] * 2, result.summary()
    text = result.ranks[0].log_path.read_text()
    assert "eager collective #7" in text  # steps 0-2: #0-#5, step 3's all_reduce #6, then #7 differs
    assert "rank0: broadcast" in text and "rank1: all_reduce" in text and "agreement_programs.py" in text


def test_the_ledger_names_a_peer_that_never_issues_its_next_collective(run_ranks_argv):
    result = _run(run_ranks_argv, "ledger", "--fault", "stuck", "--window-s", "1.0")
    assert [r.returncode for r in result.ranks] == [CollectiveMismatch.exit_code] * 2, result.summary()
    text = result.ranks[0].log_path.read_text()
    assert "rank(s) [1] issued nothing within 1.0s" in text and "last entry #6" in text
