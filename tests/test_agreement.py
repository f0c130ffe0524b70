"""The compile agreement and the eager ledger: their data (unit) and a user's serving loop (multi-process).

Multi-process topology: 2 ranks, one TP group of both, gloo, CPU, dynamo's eager backend
(tests/agreement_programs.py), each through the launcher with a deadline well beyond every delay
the test injects, so a pass proves the outcome came from the agreement, never from the deadline.
The healthy habits are each tried against it (late, paused, idle, rank-varying): none may stop.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.distributed as dist

from compile_guard.agreement import compare
from compile_guard.agreement.channel import Transport
from compile_guard.agreement.entries import Break, Frame, Statement
from compile_guard.agreement.messages import Ask, Wake
from compile_guard.agreement.ops import MAX_ENTRY_BYTES, ChannelError, Get, Set, decode, encode
from compile_guard.agreement.positions import Positions
from compile_guard.agreement.statement import guard_reason
from compile_guard.agreement.watcher import answer_window_s, default_stall_s
from compile_guard.health.sites import break_title
from compile_guard.health.structure import graph_structure
from engine.errors import CollectiveMismatch, CompileDivergence, ProtocolError, Stalled
from tests.conftest import REPO

PROGRAM = str(REPO / "tests" / "agreement_programs.py")
DEADLINE_S = 60.0  # beyond every delay of these runs but the 30 s ones (their own deadline)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"x" * (MAX_ENTRY_BYTES + 1), "over the 65536-byte limit"),
        (b"{not json", "is not JSON"),
        (b"[1, 2]", "is a JSON list, expected an object"),
        (b"\xff\xfe", "is not JSON"),
    ],
)
def test_a_peer_entry_that_is_not_a_small_json_object_is_a_clear_error(data, message):
    with pytest.raises(ChannelError, match=message):
        decode(data, what="rank 1's statement")


def test_entries_round_trip_as_canonical_json_and_never_exceed_the_limit():
    assert decode(encode({"b": 1, "a": [1, 2]}, what="x"), what="x") == {"a": [1, 2], "b": 1}
    with pytest.raises(ChannelError, match="over the"):
        encode({"big": "x" * MAX_ENTRY_BYTES}, what="my statement")


def test_the_transport_reads_an_absent_key_as_none_without_blocking():
    """A store in this process only (no collective): a get of an absent key must not wait for it."""
    server = dist.TCPStore("127.0.0.1", 0, 1, True)  # kept alive: the transport holds a client of it
    transport = Transport(server)
    assert transport.execute(Get("k")) is None
    transport.execute(Set("k", b"v"))
    assert transport.execute(Get("k")) == b"v"


def test_the_stall_window_stays_under_the_group_timeout():
    assert default_stall_s(30.0) == 27.0  # the check's groups: 30 s
    assert default_stall_s(1800.0) == 1620.0  # NCCL's default: 30 min
    assert 0 < default_stall_s(2.0) < 2.0
    assert answer_window_s(27.0, 30.0) == 1.5  # a silent rank's wait fits the margin: the report comes first


def test_positions_answer_at_once_or_when_the_asked_call_is_made():
    pos = Positions(0)
    record = pos.frame("f", "forward", "m.py:1")
    record.ran("f.0.0")
    assert pos.answer(Ask(sender=1, seq=1, fid="f", call=1)).at.count == 1  # not made yet: pending
    assert pos.pending and pos.due() == []
    record.ran("f.0.0")  # call 1 made, with the graph compiled at call 0
    (due,) = pos.due()
    assert (due.to, due.at.count, due.at.ran) == (1, 2, "f.0.0") and not pos.pending
    assert pos.answer(Ask(sender=1, seq=2, fid=None, call=0)).progress and not pos.pending  # progress only


def _statement(rank: int, collectives: list[dict], **fields) -> Statement:
    base = {
        "n": 0,
        "rank": rank,
        "slot": "f.0.0",
        "fid": "f",
        "call": 0,
        "j": 0,
        "frame": Frame(name="forward", site="m.py:1"),
        "compile_id": "0/0",
        "fingerprint": "f",
        "schedule_digest": "d",
        "settings": {"dynamo.x": False},
        "collectives": collectives,
        "breaks": [],
        "constants": [[3, "args.1", 0]],
        "constants_digest": "c",
    }
    return Statement(**{**base, **fields})


AR = {
    "op": "all_reduce",
    "group": {"name": "1", "ranks": [0, 1]},
    "shape": [16, 64],
    "dtype": "torch.float32",
    "reduce_op": "sum",
}
SITE_OF = lambda node, path: {"site": f"m.py:{node}", "key": f"m.py forward: lt {path}"}  # noqa: E731


def test_statements_name_the_differing_fields_and_the_first_differing_collective():
    a = _statement(0, [AR, AR])
    b = _statement(
        1,
        [AR, {**AR, "shape": [17, 64], "site": "m.py:9"}],
        fingerprint="g",
        schedule_digest="e",
        settings={"dynamo.x": True},
    )
    assert compare.differing([a, b]) == ["fingerprint", "schedule_digest", "settings"]
    first = compare.first_differing_collective([a, b])
    assert first.startswith("#1: ") and "[16, 64]" in first and "[17, 64]" in first and "m.py:9" in first
    assert "settings.dynamo.x" in compare.table([a, b])
    assert compare.differing([a, _statement(1, [{**AR, "site": "elsewhere.py:3"}, AR])]) == []  # a site is not issued
    verdict = compare.compare([a, b], group="1", site_of=SITE_OF, options=compare.Options()).verdict
    assert verdict.kind == "mismatch" and verdict.fields == ["fingerprint", "schedule_digest", "settings"]


def test_a_constant_that_differs_by_rank_is_listed_and_stops_only_when_asked():
    """A vocab-parallel offset: rank 0's `x - 0`, rank 1's `x - 128`, the same structure."""
    a = _statement(0, [AR])
    b = _statement(1, [AR], constants=[[3, "args.1", 128]], constants_digest="c2")
    found = compare.compare([a, b], group="1", site_of=SITE_OF, options=compare.Options())
    assert found.verdict is None and found.rank_varying == [
        {"site": "m.py:3", "key": "m.py forward: lt args.1", "values": {"0": 0, "1": 128}}
    ]
    strict = compare.compare([a, b], group="1", site_of=SITE_OF, options=compare.Options(strict_constants=True))
    assert strict.verdict.fields == ["constants"] and "rank1=128" in strict.verdict.text


def test_a_rank_only_graph_break_whose_streams_line_up_is_an_asymmetry_not_a_mismatch():
    printed = Break(reason="gb0059: Failed to trace builtin operator", site="m.py:5", count=1, source="print(x.shape)")
    whole, cut = _statement(0, [AR, AR]), _statement(1, [AR], fingerprint="g", breaks=[printed], schedule_digest="e")
    found = compare.compare([whole, cut], group="1", site_of=SITE_OF, options=compare.Options())
    assert found.verdict is None and "line up so far" in found.asymmetry and "m.py:5" in found.asymmetry
    stopped = compare.compare([whole, cut], group="1", site_of=SITE_OF, options=compare.Options(stop_on_asymmetry=True))
    assert stopped.verdict.kind == "asymmetry"
    text = stopped.verdict.text
    assert text.index("m.py:5") < text.index("line up")  # the break's site first, then the streams
    parted = _statement(1, [{**AR, "shape": [8, 64]}], fingerprint="g", breaks=[printed], schedule_digest="e")
    assert compare.compare([whole, parted], group="1", site_of=SITE_OF, options=compare.Options()).verdict.kind == (
        "mismatch"
    )


def test_each_cache_entrys_failed_guard_is_one_line_with_its_entry():
    raw = (
        "0/1: self.scale == 1.0 # h = gelu(self.up(x)) * self.scale # mp/x.py:47 in forward\nUser stack trace:\n"
        '  File "/work/docs/examples/x.py", line 47, in forward\n    h = gelu(self.up(x)) * self.scale'
    )
    want = (
        "guard failed (cache entry 0/1): self.scale == 1.0 at docs/examples/x.py:47 | h = gelu(self.up(x)) * self.scale"
    )
    assert guard_reason(raw) == want
    assert guard_reason(None) is None
    text = "Encountered graph break trying to trace CALL\n\nFailed to trace builtin operator\n  Explanation: x"
    assert break_title(text) == "Failed to trace builtin operator"


def _arange_graph(index: int, offset: int) -> torch.fx.GraphModule:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    z = graph.call_function(torch.arange, (8,), {"device": torch.device("cuda", index)})
    graph.output(graph.call_function(torch.add, (graph.call_function(torch.sub, (x, offset)), z)))
    return torch.fx.GraphModule(torch.nn.Module(), graph)


def test_the_structure_leaves_out_the_ranks_own_device_and_its_constants():
    """Rank r's graph makes a tensor on cuda:r and subtracts its vocab offset: one structure on every rank;
    another rank's device, or another op, is a different structure."""
    ranks = [graph_structure(_arange_graph(r, 128 * r), local_device=torch.device("cuda", r)) for r in range(4)]
    assert len({s["fingerprint"] for s in ranks}) == 1
    assert len({s["constants_digest"] for s in ranks}) == 4  # the offsets: constants, compared apart
    foreign = graph_structure(_arange_graph(1, 0), local_device=torch.device("cuda", 0))
    assert foreign["fingerprint"] != ranks[0]["fingerprint"]


def _run(run_ranks_argv, *args: str, deadline_s: float = DEADLINE_S):
    result = run_ranks_argv([sys.executable, PROGRAM, *args], deadline_s=deadline_s)
    assert result.outcome != "deadline", result.summary()
    return result


def _results(result) -> list[dict]:
    """Each rank's program result (the JSON line agreement_programs prints when it returns)."""
    from tests.agreement_programs import RESULT

    found = []
    for r in result.ranks:
        lines = [line for line in r.log_path.read_text().splitlines() if line.startswith(RESULT)]
        assert lines, f"rank {r.rank} printed no result"
        found.append(json.loads(lines[-1][len(RESULT) :]))
    return found


def _healthy(result) -> None:
    assert [r.returncode for r in result.ranks] == [0, 0], result.summary()
    assert not any("compile divergence" in r.log_path.read_text() for r in result.ranks)


def test_a_healthy_serving_loop_agrees_on_its_one_graph(run_ranks_argv):
    result = _run(run_ranks_argv, "compile")
    _healthy(result)
    assert all(r["graphs"] == 1 and r["agreed"] == 1 for r in _results(result))


@pytest.mark.parametrize("late_s", [pytest.param(3, marks=pytest.mark.smoke), 30])
@pytest.mark.parametrize("fault, graphs", [("late_first", 1), ("late_recompile", 2)])
def test_a_late_peer_is_waited_for_not_called_divergent(run_ranks_argv, fault, graphs, late_s):
    """Rank 0 spends `late_s` of eager work before its first call (or before the step where every rank meets a
    new shape) while rank 1 holds the same graph. The group's timeout is 60 s: the unguarded job survives a
    30 s wait in its collective, so the guarded one must too (its stall window is 54 s)."""
    result = _run(
        run_ranks_argv,
        "compile",
        "--fault",
        fault,
        "--late-s",
        str(late_s),
        "--timeout-s",
        "60",
        deadline_s=DEADLINE_S + late_s,
    )
    _healthy(result)
    assert all(r["graphs"] == graphs and r["agreed"] == graphs for r in _results(result))


def test_a_peer_sigstopped_for_5s_then_resumed_is_waited_for(run_ranks_argv):
    """Rank 1 SIGSTOPs rank 0 before the step where both recompile, and SIGCONTs it 5 s later: no answer for 5 s
    is not proof of anything."""
    _healthy(_run(run_ranks_argv, "compile", "--fault", "sigstop", "--late-s", "5"))


def test_a_peer_that_compiles_for_longer_than_a_probe_is_waited_for(run_ranks_argv):
    """Rank 1 reaches the backend 3 s late (a long trace on one rank): busy compiling is progress."""
    result = _run(run_ranks_argv, "compile", "--fault", "slow_compile", "--stall-s", "2")
    _healthy(result)


def test_a_rank_varying_constant_is_reported_not_stopped(run_ranks_argv):
    """`(x - offset)` with offset = 128 * rank, as a vocab-parallel embedding has it (in shard_math, inlined)."""
    result = _run(run_ranks_argv, "compile", "--fault", "varying")
    _healthy(result)
    line = next(i for i, text in enumerate(open(PROGRAM), 1) if "(x - offset)" in text)  # the offset's line
    assert all(r["rank_varying"] == [f"agreement_programs.py:{line}"] for r in _results(result))


@pytest.mark.smoke
def test_a_rank_only_recompile_mid_step_stops_both_ranks_before_the_new_graph_runs(run_ranks_argv):
    """Rank 1 alone recompiles (a guarded float changed) while rank 0 runs on into graph 0's all-reduce: rank 0's
    count of the call is the proof, at once; rank 0's watcher stops it inside the collective."""
    result = _run(run_ranks_argv, "compile", "--fault", "recompile")
    assert [r.returncode for r in result.ranks] == [CompileDivergence.exit_code] * 2, result.summary()
    text = result.ranks[1].log_path.read_text()
    assert "rank 0 made call 3 of this frame without compiling: it ran its graph #0" in text
    assert "guard failed (cache entry 0/0): self.scale == 1.0" in text  # 2.6's L['self'].scale read as 2.7's
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 7):  # 2.6 states no user line for it
        assert "agreement_programs.py" in text
    assert "stopped by rank 1's verdict" in result.ranks[0].log_path.read_text()


@pytest.mark.parametrize(
    "fault, said",
    [
        ("garbled", "over the 65536-byte limit"),  # not even an entry: the store's size limit
        ("foreign", "statement has no field 'fingerprint'"),  # an entry, not a statement of this version
    ],
)
def test_a_peer_statement_that_is_not_ours_is_a_protocol_error_not_a_hang(run_ranks_argv, fault, said):
    """Rank 1 publishes each statement garbled; rank 0 reads it and declares a protocol error: both exit 3."""
    result = _run(run_ranks_argv, "compile", "--fault", fault)
    assert [r.returncode for r in result.ranks] == [ProtocolError.exit_code] * 2, result.summary()
    assert said in result.ranks[0].log_path.read_text()


def test_a_peer_sigstopped_for_good_gives_the_stall_report(run_ranks_argv):
    result = _run(run_ranks_argv, "compile", "--fault", "frozen", "--stall-s", "3")
    assert result.ranks[1].returncode == Stalled.exit_code and result.ranks[0].signal == "SIGKILL", result.summary()
    text = result.ranks[1].log_path.read_text()
    assert "stall in group" in text and "no answer (stopped, or wedged outside Python)" in text


def test_a_stuck_peer_gives_the_stall_report_with_where_it_is(run_ranks_argv):
    result = _run(run_ranks_argv, "compile", "--fault", "stuck", "--stall-s", "3")
    assert [r.returncode for r in result.ranks] == [Stalled.exit_code] * 2, result.summary()
    text = result.ranks[1].log_path.read_text()
    assert "holds graph #1 'forward' call 3" in text and "agreement_programs.py" in text and "_before_step" in text


def test_the_ledger_passes_a_symmetric_loop(run_ranks_argv):
    result = _run(run_ranks_argv, "ledger")
    _healthy(result)
    calls = 8 * 2  # steps x (all_reduce + broadcast), on the one watched group
    assert all(f": {calls}}}}}" in r.log_path.read_text() for r in result.ranks)


def test_the_ledger_waits_out_an_idle_server(run_ranks_argv):
    """Rank 0 gets no request for 15 s; rank 1 waits in its broadcast: the normal state of a server."""
    _healthy(_run(run_ranks_argv, "ledger", "--fault", "idle", "--late-s", "15"))


def test_the_ledger_stops_an_extra_eager_collective_before_it_is_issued(run_ranks_argv):
    """Rank 1's extra all_reduce meets rank 0's broadcast: without the ledger gloo aborts on the size
    mismatch; with it both ranks stop with both calls named."""
    result = _run(run_ranks_argv, "ledger", "--fault", "extra")
    assert [r.returncode for r in result.ranks] == [CollectiveMismatch.exit_code] * 2, result.summary()
    text = result.ranks[0].log_path.read_text()
    assert "eager collective #7" in text  # steps 0-2: #0-#5, step 3's all_reduce #6, then #7 differs
    assert "rank0: broadcast" in text and "rank1: all_reduce" in text and "agreement_programs.py" in text


def test_the_ledger_reports_a_peer_that_never_issues_its_next_collective(run_ranks_argv):
    result = _run(run_ranks_argv, "ledger", "--fault", "stuck", "--stall-s", "3")
    assert [r.returncode for r in result.ranks] == [Stalled.exit_code] * 2, result.summary()
    text = result.ranks[0].log_path.read_text()
    assert "waiting for eager collective #7 (broadcast)" in text and "holds eager #7 broadcast" in text


def test_a_rank_only_graph_break_whose_collectives_line_up_is_reported_not_stopped(run_ranks_argv):
    """Rank 1 prints inside forward (a rank-only graph break): its all-reduce moves to its resume function's
    graph. Rank 0 ran the whole call as one graph with the same one all-reduce: the streams line up, so the
    one-call API reports the asymmetry (both graphs of rank 1) and stops nothing."""
    result = _run(run_ranks_argv, "compile", "--fault", "rank_print")
    _healthy(result)
    rank1 = result.ranks[1].log_path.read_text()
    assert {k: _results(result)[1][k] for k in ("graphs", "agreed", "asymmetries")} == {
        "graphs": 2,
        "agreed": 2,
        "asymmetries": 2,
    }
    assert "a graph break on rank(s) [1] only" in rank1 and "ran the parent call as one graph" in rank1


def test_the_structure_takes_the_ranks_own_device_from_torch_when_not_given(monkeypatch):
    """What the statement and the probe call (no device passed): on rank 1 of a GPU node, torch's current device."""
    from compile_guard.health import structure

    monkeypatch.setattr(structure, "own_device", lambda: torch.device("cuda", 1))
    assert (
        graph_structure(_arange_graph(1, 0))["fingerprint"]
        == graph_structure(_arange_graph(0, 0), local_device=torch.device("cuda", 0))["fingerprint"]
    )


def test_a_watcher_whose_channel_breaks_still_stops_its_rank_as_a_protocol_error(monkeypatch):
    """In process, one rank's watcher on a real TCPStore: the verdict it is woken for is not JSON (a peer's entry
    that breaks the protocol). The watcher neither dies quietly (its rank could no longer be stopped) nor calls it
    a divergence: it stops its rank with a ProtocolError verdict (rank exit 15, CLI 3)."""
    from compile_guard.agreement import protocol, watcher
    from compile_guard.agreement.ops import post

    server = dist.TCPStore("127.0.0.1", 0, 1, True)
    stopped = []
    monkeypatch.setattr(watcher.Watcher, "stop", lambda self, verdict: stopped.append(verdict))  # not os._exit here
    member = protocol.Member(rank=0, ranks=(0, 1), group="g", prefix="t", stall_s=5.0)
    watching = watcher.Watcher(server, protocol.Link(member, Positions(0)), event="compile_divergence")
    server.set(member.verdict, b"{not json")
    Transport(server).run(post(member.watch_box(0), Wake()))
    watching._thread.join(timeout=10)
    assert not watching._thread.is_alive() and len(stopped) == 1, stopped
    assert stopped[0].error == "ProtocolError" and stopped[0].kind == "watcher_failed"
    assert "is not JSON" in stopped[0].text
    assert watcher.error_of(stopped[0]).exit_code == 15


def test_the_same_break_on_every_rank_is_no_divergence(run_ranks_argv):
    """Every rank prints at the same place: each runs forward's graph, then the same resume function's; the
    wait-for rules see a peer split at the same breaks as late, never as another path."""
    result = _run(run_ranks_argv, "compile", "--fault", "print_every_rank")
    _healthy(result)
    assert all(r["graphs"] == 2 and r["agreed"] == 2 and r["asymmetries"] == 0 for r in _results(result))


@pytest.mark.smoke
def test_ranks_breaking_forward_at_different_places_are_stopped_at_once(run_ranks_argv):
    """Rank 0 prints before the shard math, rank 1 after it. forward's first graphs differ only by where each
    broke (the streams line up: an asymmetry the one-call API accepts); then each holds its own resume
    function, which the other never runs in that call: proof (rule 8 or 7), not a stall. The stall window is
    25 s: a verdict from the clock would name a stall."""
    result = _run(run_ranks_argv, "compile", "--fault", "break_both", "--stall-s", "25")
    assert [r.returncode for r in result.ranks] == [CompileDivergence.exit_code] * 2, result.summary()
    text = result.ranks[0].log_path.read_text()
    assert "the ranks took different paths" in text and "stall in group" not in text
    prints = [i for i, line in enumerate(open(PROGRAM), 1) if 'print("debug:' in line]  # rank 0's, then rank 1's
    assert f"agreement_programs.py:{prints[0]}" in text and f"agreement_programs.py:{prints[1]}" in text


def test_a_frame_one_rank_skipped_is_a_wait_for_cycle_stopped_at_once(run_ranks_argv):
    """Rank 1 calls a disabled function inside a loop: dynamo skips its forward and compiles shard_math as a frame
    of its own. Rank 0 holds forward's graph, rank 1 shard_math's; neither can go on (rule 7)."""
    result = _run(run_ranks_argv, "compile", "--fault", "skip", "--stall-s", "25")
    assert [r.returncode for r in result.ranks] == [CompileDivergence.exit_code] * 2, result.summary()
    text = result.ranks[1].log_path.read_text()
    assert "a wait-for cycle" in text and "frame 'shard_math'" in text and "frame 'forward'" in text
    touch = next(i for i, line in enumerate(open(PROGRAM), 1) if "local = _touch(local)" in line)
    assert f"agreement_programs.py:{touch}" in text  # the break that put rank 1 on its path, by its site
