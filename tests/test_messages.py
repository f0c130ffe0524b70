"""The agreement's messages and entries (compile_guard.agreement.messages, .entries): every registered kind and
every entry survives its JSON; what is no message of this version is Unreadable (ignored by every reader), never
an exception; what is no statement of this version is a BadEntry naming its field (a protocol error, exit 3)."""

from __future__ import annotations

import json
import re

import pytest

from compile_guard.agreement import messages, proofs
from compile_guard.agreement.entries import AGREED, SHOWN, BadEntry, Break, Frame, Parent, Statement, Verdict
from compile_guard.agreement.messages import (
    KINDS,
    Ask,
    HeldEntry,
    HeldGraph,
    Position,
    Report,
    Stated,
    Unreadable,
    Wake,
    Where,
    holding_json,
)
from compile_guard.agreement.ops import ChannelError, Get
from compile_guard.agreement.protocol import Member, read_statement

# one of each kind, with every field set away from its default where it has one
EXAMPLES = [
    Wake(),
    Stated(sender=1, slot="f.0.0"),
    Stated(sender=1, slot=None),  # the peer left
    messages.Closed(),
    Ask(sender=0, seq=3, fid="f", call=2, parent=("g", 1)),
    Ask(sender=0, seq=4, full=True),
    Position(
        sender=1,
        to=0,
        seq=3,
        busy="0/1",
        progress=[4, 1, 0],
        holding=HeldGraph(
            slot="g.1.0", fid="g", call=1, n=4, frame=Frame(name="g", site="m.py:9"), parent=("f", 2), since=12.5
        ),
        at=Where(fid="f", call=2, count=3, ran="f.0.0", parent_ran="g.1.0"),
        stated=["f.2.0"],
    ),
    Position(  # holding an eager collective (the ledger), its frame's call made
        sender=1,
        to=0,
        seq=5,
        busy="",
        progress=[4, 1, 2],
        holding=HeldEntry(group="tp", entry=7, op="all_reduce", since=3.0),
        at=Where(fid="f", call=2, count=3, ran="f.0.0"),
        stated=[],
        final=True,
    ),
    Report(sender=1, seq=4, row={"rank": 1, "holding": None, "stack": ["m.py:3 forward"]}),
]


def test_every_kind_is_registered_once_and_exemplified():
    assert sorted(KINDS) == sorted({type(m).KIND for m in EXAMPLES})


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: f"{type(m).__name__}")
def test_a_message_survives_its_json(message):
    wire = json.loads(json.dumps(message.to_json()))  # what ops.post writes and Inbox.receive reads
    assert messages.parse(wire) == message


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "nonsense", "from": 1},  # a kind this version does not know
        {"from": 1},  # no kind at all
        {"kind": "ask", "seq": 1},  # an ask that names no sender
        {"kind": "pos", "from": 1, "to": 0, "seq": 1},  # a position without its counts
        {"kind": "ask", "from": 0, "seq": "x"},  # a sequence number that is no number
        {"kind": "pos", "from": 1, "to": 0, "seq": 1, "call": 0, "count": 0, "holding": {"what": "graph"}},  # no slot
        {"kind": "pos", "from": 1, "to": 0, "seq": 1, "call": 0, "count": 0, "holding": {"what": "dancing"}},
    ],
)
def test_what_is_no_message_is_unreadable_and_keeps_its_sender(data):
    parsed = messages.parse(data)
    assert isinstance(parsed, Unreadable) and parsed.raw == data
    assert parsed.sender == (data["from"] if isinstance(data.get("from"), int) else None)


def test_a_verdict_round_trips_and_ignores_what_it_does_not_know():
    verdict = Verdict(
        error="CompileDivergence",
        kind="cycle",
        text="t",
        fields=["path"],
        ranks=[0, 1],
        held={"0": "f.0.0", "1": "g.0.0"},
        by=1,
    )
    assert Verdict.from_json(json.loads(json.dumps(verdict.to_json()))) == verdict
    assert "slot" not in verdict.to_json()  # an optional field left None is left out of the entry
    assert Verdict.from_json({"error": "Stalled", "kind": "stall", "text": "t", "newer": 1}).kind == "stall"


# A statement as StatementMaker writes it (compile_guard.agreement.statement), every optional part present
STATEMENT = Statement(
    n=1,
    rank=1,
    slot="r.0.0",
    fid="r",
    call=0,
    j=0,
    frame=Frame(name="torch_dynamo_resume_in_forward_at_5", site="m.py:5"),
    parent=Parent(fid="f", call=3, name="forward"),
    compile_id="1/0",
    recompile_reason="guard failed: x.size()[0] == 4 at m.py:2",
    recompile_reasons=["guard failed: x.size()[0] == 4 at m.py:2"],
    breaks=[Break(reason="gb0059: Failed to trace builtin operator", site="m.py:5", count=2, source="print(x)")],
    split=["m.py:5"],
    fingerprint="f1",
    schedule_digest="d1",
    collectives=[{"op": "all_reduce", "group": {"name": "1", "ranks": [0, 1]}, "shape": [4, 8]}],
    collectives_total=1,
    constants=[[3, "args.1", 128]],
    constants_total=1,
    constants_digest="c1",
    settings={"dynamo.x": True},
    settings_digest="s1",
)


def test_a_statement_survives_its_json_and_ignores_what_it_does_not_know():
    wire = json.loads(json.dumps(STATEMENT.to_json()))  # what protocol.publish writes and read_statement reads
    assert Statement.from_json(wire) == STATEMENT
    assert Statement.from_json({**wire, "newer": 1}) == STATEMENT  # a newer writer's field: left out
    bare = {k: v for k, v in wire.items() if k in ("n", "rank", "slot", "fid", "call", "j", "frame")}
    older = Statement.from_json({**bare, "fingerprint": "f", "schedule_digest": "d", "collectives": []})
    assert older.split is None and older.parent is None and older.breaks == []  # the optional parts default


def test_the_compared_fields_are_named_once_by_the_statement():
    """judge compares AGREED and shows SHOWN, both read from the field metadata of Statement: these tuples are the
    protocol's contract (a field added to either changes what stops a job, or what its report shows)."""
    assert AGREED == ("frame", "fingerprint", "schedule_digest", "settings", "settings_digest")
    assert SHOWN == (
        "frame",
        "compile_id",
        "recompile_reason",
        "fingerprint",
        "schedule_digest",
        "collectives_total",
        "constants_digest",
        "settings_digest",
    )


@pytest.mark.parametrize(
    "change, said",
    [
        ({"fingerprint": None}, "statement has no field 'fingerprint'"),  # None: the key removed
        ({"fingerprint": 3}, "statement.fingerprint is int 3, expected str"),
        ({"call": True}, "statement.call is bool True, expected int"),  # a bool is no count
        ({"frame": {"name": "f"}}, "statement.frame has no field 'site'"),
        ({"frame": "f"}, "statement.frame is a JSON str, expected an object (Frame)"),
        (
            {"breaks": [{"reason": "r", "site": "s", "count": "1", "source": ""}]},
            "statement.breaks[0].count is str '1'",
        ),
        ({"collectives": {"op": "x"}}, "statement.collectives is dict {'op': 'x'}, expected a list"),
        ({"settings": [1]}, "statement.settings is list [1], expected an object"),
        ({"parent": {"fid": "f"}}, "statement.parent has no field 'call'"),
    ],
)
def test_a_statement_that_is_not_of_this_version_is_a_bad_entry_naming_its_field(change, said):
    wire = {**STATEMENT.to_json(), **change}
    wire = {k: v for k, v in wire.items() if v is not None or k not in change}
    with pytest.raises(BadEntry, match=re.escape(said)):
        Statement.from_json(wire)


def test_reading_a_statement_that_is_no_statement_is_a_channel_error():
    """The hold's read (protocol.read_statement): the gate turns a ChannelError into a protocol error on every rank
    (exit 3), so a peer running another compile_guard is never judged as a divergence."""
    member = Member(rank=0, ranks=(0, 1), group="g", prefix="p", stall_s=10.0)
    actor = read_statement(member, "f.0.0", 1)
    assert actor.send(None) == Get(member.statement("f.0.0", 1))
    with pytest.raises(ChannelError, match=r"rank 1's statement of slot f.0.0: statement has no field 'fingerprint'"):
        actor.send(json.dumps({k: v for k, v in STATEMENT.to_json().items() if k != "fingerprint"}).encode())
    absent = read_statement(member, "f.0.0", 1)
    absent.send(None)
    with pytest.raises(StopIteration) as stop:
        absent.send(None)  # the key is absent: the peer has not stated it (late, rule 1)
    assert stop.value.value is None


def test_the_stall_report_reads_each_rows_holding_by_its_kind():
    """A stall report's rows are JSON (Report.row): each rank's holding is read back by its kind, and one this
    version cannot read is said so, not guessed at (the report still comes: it is the job's last word)."""
    graph = HeldGraph(
        slot="f.3.0", fid="f", call=3, n=1, frame=Frame(name="forward", site="m.py:1"), parent=None, since=2.0
    )
    rows = {
        0: {"holding": holding_json(graph)},
        1: {"holding": holding_json(HeldEntry(group="tp", entry=7, op="all_reduce", since=4.5))},
        2: {"holding": {"what": "graph", "n": 1}},  # another version's row
        3: {"holding": None, "busy": "0/2"},
    }
    text = proofs.stall_text("g", [0, 1, 2, 3, 4], rows, what="graph #1", quiet_s=9.0, now=10.0)
    assert "holds graph #1 'forward' call 3 (8.0s)" in text  # 10.0 - 2.0
    assert "holds eager #7 all_reduce on tp (5.5s)" in text  # 10.0 - 4.5
    assert "holds what this version cannot read: {'what': 'graph', 'n': 1}" in text
    assert "compiling 0/2" in text and "no answer (stopped, or wedged outside Python)" in text  # rank 4: no row


def test_a_holding_is_read_by_its_annotations():
    """`since` written as a whole number is still a time; the parent call, a JSON list, is the (fid, call) pair."""
    entry = messages.parse_holding({"what": "ledger", "group": "tp", "entry": 1, "op": None, "since": 3})
    assert entry == HeldEntry(group="tp", entry=1, op=None, since=3.0) and isinstance(entry.since, float)
    wire = holding_json(EXAMPLES[6].holding)  # the position holding a graph inside parent call (f, 2)
    assert wire["parent"] == ["f", 2] and messages.parse_holding(wire).parent == ("f", 2)
    with pytest.raises(ValueError, match=r"holding.parent is \['f'\], expected a list of 2"):
        messages.parse_holding({**wire, "parent": ["f"]})
    with pytest.raises(ValueError, match="neither a graph nor a ledger entry"):
        messages.parse_holding(["graph"])
