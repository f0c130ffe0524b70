"""The agreement's messages, typed: one dataclass per kind, one registry of kinds, JSON both ways.

A message is what one rank posts into another's mailbox (compile_guard.agreement.ops.post); statements,
issued schedules and the verdict are store *entries*, not messages (the statement and the verdict are typed in
compile_guard.agreement.entries). Every message is only a wake-up with a hint (protocol rule 4): a holder
re-reads the store after each. Torch-free, store-free.

    kind      class      sent by                          read by
    verdict   Wake       declare, a watcher passing it on  watcher (stops the rank), holder (reads the verdict)
    stated    Stated     publish (slot), close (None)     holder: a peer moved / left
    closed    Closed     close, to its own watcher         watcher: end
    ask       Ask        a holder, the stall report        watcher: answer from the counters (maybe pending)
    pos       Position   watcher, main thread (pending)    holder: where the peer is (rules 2, 3, 7, 8)
    report    Report     watcher, for the stall report     the stall report's gatherer: every rank's row

What a rank's main thread holds travels in its Position (and in its stall report's row) as a `Holding`: a
`HeldGraph` (rule 7 reads it) or a `HeldEntry` (the ledger).

`parse` turns a peer's JSON object into its message; one that is not a known kind with the fields it needs
is `Unreadable` and ignored by every reader, as a stray entry always was (an undecodable *entry* is a
ChannelError, ops.decode).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from compile_guard.agreement.entries import BadEntry, Frame
from compile_guard.contracts import wire

KINDS: dict[str, type[Message]] = {}  # the one registry: kind -> message class (filled by @kind)


def kind(name: str):  # noqa: ANN201  (a class decorator)
    def register(cls: type[Message]) -> type[Message]:
        assert name not in KINDS, f"message kind {name!r} registered twice"
        cls.KIND = name
        KINDS[name] = cls
        return cls

    return register


@dataclass(frozen=True, kw_only=True)
class Message:
    KIND: ClassVar[str] = ""
    sender: int | None = None  # the posting rank ("from" on the wire); None where the kind carries none

    def to_json(self) -> dict[str, Any]:
        data = {("from" if f.name == "sender" else f.name): getattr(self, f.name) for f in dataclasses.fields(self)}
        if data.get("from") is None:
            data.pop("from")
        return {"kind": self.KIND, **data}


@kind("verdict")
@dataclass(frozen=True, kw_only=True)
class Wake(Message):
    """A verdict was written (rule 6): read it from the store."""


@kind("stated")
@dataclass(frozen=True, kw_only=True)
class Stated(Message):
    """The sender stated `slot` (rule 4's wake-up); None: it left the agreement, its final position is written."""

    slot: str | None


@kind("closed")
@dataclass(frozen=True, kw_only=True)
class Closed(Message):
    """This rank left the agreement: its watcher ends."""


@kind("ask")
@dataclass(frozen=True, kw_only=True)
class Ask(Message):
    """Where are you with call `call` of frame `fid` (and with its parent call)? fid None: only how far (the
    ledger's and the issued schedule's probe: never pending). `full`: every row for the stall report (rule 5)."""

    seq: int  # the asker's question number; the answer carries it back
    fid: str | None = None
    call: int = 0
    parent: tuple[str, int] | None = None  # (fid, call) of the compiled call the asked frame runs inside
    full: bool = False


@dataclass(frozen=True, kw_only=True)
class Where:
    """A rank's counters as far as one question goes (positions.where): the facts rules 2, 3 and 7 read."""

    fid: str | None  # the asked frame
    call: int  # the asked call of it
    count: int  # calls of the frame made so far: past `call`, the call is made (rule 2)
    ran: str | None  # the slot that ran at `call` (None: not made, or older than the history)
    parent_ran: str | None = None  # the slot that ran at the parent call (rule 3); None: none asked, or not made


@dataclass(frozen=True, kw_only=True)
class HeldGraph:
    """What a rank's main thread holds: a new graph, before its first run (holds.GraphHold; rule 7 reads it)."""

    WHAT: ClassVar[str] = "graph"
    slot: str  # the graph's slot
    fid: str  # its frame's id
    call: int  # the call of the frame it was compiled at
    n: int  # the holder's graph number
    frame: Frame  # the frame, for the reports
    parent: tuple[str, int] | None  # (fid, call) of the compiled call it runs inside
    since: float  # when the hold began (the holder's transport clock)


@dataclass(frozen=True, kw_only=True)
class HeldEntry:
    """What a rank's main thread holds: an eager collective, before it is issued (holds.hold_entry, the ledger)."""

    WHAT: ClassVar[str] = "ledger"
    group: str  # the ledger group's name
    entry: int  # the entry's number in that group
    op: str | None  # the collective
    since: float  # when the hold began


Holding = HeldGraph | HeldEntry


def holding_json(held: Holding | None) -> dict[str, Any] | None:
    """A holding as it travels (in a Position, in a stall report's row): a JSON object with its `what`."""
    if held is None:
        return None
    data = {f.name: getattr(held, f.name) for f in dataclasses.fields(held)}
    if isinstance(held, HeldGraph):
        data.update(frame=dataclasses.asdict(held.frame), parent=list(held.parent) if held.parent else None)
    return {"what": held.WHAT, **data}


def parse_holding(data: dict[str, Any] | None) -> Holding | None:
    """A peer's holding as its class; ValueError (entries.BadEntry) when it is not one (its message is then
    Unreadable)."""
    if data is None:
        return None
    cls = (
        {HeldGraph.WHAT: HeldGraph, HeldEntry.WHAT: HeldEntry}.get(data.get("what")) if isinstance(data, dict) else None
    )
    if cls is None:
        raise ValueError(f"a holding that is neither a graph nor a ledger entry: {data!r:.60}")
    return wire.read(cls, data, what="holding", error=BadEntry)


@kind("pos")
@dataclass(frozen=True, kw_only=True)
class Position(Message):
    """The answer to an Ask: where the sender is. Sent by its watcher, or by its main thread once the asked call
    is made (pending), or when it begins a hold (rule 7: `holding`)."""

    to: int  # the asker
    seq: int  # the asker's question number
    busy: str  # the compile id while compiling: progress (rule 5)
    progress: list[int]  # changes whenever the sender advances (positions.Positions.progress)
    holding: Holding | None  # what its main thread holds now (read before its counts)
    at: Where
    stated: list[str]  # the slots it stated at the asked call
    final: bool = False  # read from its final position: it left, it will never make more calls

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["holding"] = holding_json(self.holding)
        return {**{k: v for k, v in data.items() if k != "at"}, **dataclasses.asdict(self.at)}


@kind("report")
@dataclass(frozen=True, kw_only=True)
class Report(Message):
    """The sender's row of a stall report: every agreement's counters and what it holds, its stack."""

    seq: int  # the gatherer's question number
    row: dict[str, Any] = field(default_factory=dict)  # positions.Positions.report() + the rank's own description

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.KIND, "from": self.sender, "seq": self.seq, **self.row}


@dataclass(frozen=True, kw_only=True)
class Unreadable(Message):
    """A JSON object that is no message of this version: every reader ignores it (its sender, when it names one,
    still counts as a peer to read again)."""

    raw: dict[str, Any]


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_WHERE = tuple(f.name for f in dataclasses.fields(Where))  # a Position's counters, flat on the wire
_SENT_BY = ("ask", "pos", "report", "stated")  # the kinds that name their sender (the answer goes back to it)


def parse(data: dict[str, Any]) -> Message:
    """A peer's message as its class, read by the one typed-JSON reader (compile_guard.contracts.wire): Unreadable
    when the kind or a field is not what this version sends."""
    sender = data.get("from") if isinstance(data, dict) else None
    sender = sender if _int(sender) else None
    try:
        cls = KINDS[data["kind"]]
        if cls.KIND in _SENT_BY:
            _need(sender)
        fields = {k: v for k, v in data.items() if k not in ("kind", "from")}
        if cls is Report:  # the row travels flat beside the question number
            fields = {"seq": fields.get("seq"), "row": {k: v for k, v in fields.items() if k != "seq"}}
        if cls is Position:  # the counters travel flat; the holding names its own class
            fields["at"] = {name: fields.pop(name) for name in _WHERE if name in fields}
            fields["holding"] = parse_holding(fields.get("holding"))
        fields["sender"] = sender
        return wire.read(cls, fields, what=cls.KIND, error=BadEntry)
    except (KeyError, TypeError, ValueError, IndexError):
        return Unreadable(sender=sender, raw=data)


def _need(sender: int | None) -> int:
    if sender is None:
        raise ValueError("a message of this kind names its sender")
    return sender
