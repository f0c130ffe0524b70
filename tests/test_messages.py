"""The agreement's messages (compile_guard.agreement.messages): every registered kind survives its JSON, and
what is no message of this version is Unreadable (ignored by every reader), never an exception."""

from __future__ import annotations

import json

import pytest

from compile_guard.agreement import messages
from compile_guard.agreement.messages import KINDS, Ask, Position, Report, Stated, Unreadable, Verdict, Wake, Where

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
        holding={"what": "graph", "slot": "g.1.0"},
        at=Where(fid="f", call=2, count=3, ran="f.0.0", parent_ran="g.1.0"),
        stated=["f.2.0"],
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
