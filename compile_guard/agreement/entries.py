"""The agreement's store entries, typed: the statement a rank writes for each graph it compiles, and the verdict.

An entry is written once on the job's store and read by any rank (a message, compile_guard.agreement.messages,
is posted into one rank's mailbox). Both are frozen dataclasses with JSON both ways:

- `Statement`: what a rank states about one compiled graph (made by compile_guard.agreement.statement, judged by
  compile_guard.agreement.compare). Its fields say themselves whether the ranks must agree on them (`AGREED`,
  derived from the field metadata: the compared fields are named once, here) and whether a divergence report
  shows them (`SHOWN`). A peer's statement is validated on arrival (`from_json`): a missing field or one of
  another type is a BadEntry, which the reader turns into a protocol error (exit 3), never a divergence.
- `Verdict`: what was proven, written once (protocol rule 6) and raised on every rank.

Torch-free, store-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from compile_guard.contracts import wire
from compile_guard.contracts.wire import WireError

_AGREED = {"agreed": True, "shown": True}  # every rank must state the same value (a difference: a divergence)
_SHOWN = {"shown": True}  # may differ (explains a difference); shown in the report's table when it does
_AGREED_BY_ROWS = {"agreed": True}  # agreed; the table shows what differs in it one row per key (compare.settings_rows)


class BadEntry(WireError):
    """A peer's entry that is a JSON object but not the entry this version writes (a field missing or mistyped)."""


@dataclass(frozen=True, kw_only=True)
class Frame:
    name: str  # the function's name (dynamo's resume functions: torch_dynamo_resume_in_<name>_at_<line>)
    site: str  # the file and line of its first line, relative (compile_guard.health.sites.relative_site)


@dataclass(frozen=True, kw_only=True)
class Parent:
    """The compiled call a graph runs inside (a resume function's caller; protocol rule 3)."""

    fid: str  # the parent frame's id (compile_guard.agreement.statement.frame_id)
    call: int  # the call of it this rank was making (its local count)
    name: str | None = None  # the parent frame's name, for the reports


@dataclass(frozen=True, kw_only=True)
class Break:
    """A graph break logged since the rank's previous graph (compile_guard.health.sites)."""

    reason: str  # 'gbNNNN: title' (dynamo's graph-break registry id and its title)
    site: str  # the user's file:line that broke the graph
    count: int  # how often it was logged at that site since the previous graph
    source: str  # the source line at the site ("" when unknown)


@dataclass(frozen=True, kw_only=True)
class Statement:
    """One rank's statement of one compiled graph, published before the graph's compile, so before its first run."""

    n: int  # this rank's graph number in compile order
    rank: int  # the stating rank (global)
    slot: str  # positions.slot_key(fid, call, j): what the ranks pair statements by (rule 1)
    fid: str  # the frame's id (its name and site hashed)
    call: int  # the call of the frame this rank was making when dynamo compiled the graph (its local count)
    j: int  # the graphs compiled at that call before this one
    frame: Frame = field(metadata=_AGREED)  # the compiled function
    parent: Parent | None = None  # for a frame compiled inside another compiled call: that call
    compile_id: str | None = field(default=None, metadata=_SHOWN)  # dynamo's compile id ("0/1": frame 0, 1st recompile)
    recompile_reason: str | None = field(default=None, metadata=_SHOWN)  # the first of `recompile_reasons`
    recompile_reasons: list[str] = field(default_factory=list)  # each cache entry's failed guard, same `self` first
    breaks: list[Break] = field(default_factory=list)  # graph breaks since this rank's previous graph
    split: list[str] | None = None  # sites of the breaks that split this graph's frame; None: not stated (all breaks)
    fingerprint: str = field(metadata=_AGREED)  # the graph's structure (compile_guard.health.structure)
    schedule_digest: str = field(metadata=_AGREED)  # its collective schedule after dispatch, every entry
    collectives: list[dict[str, Any]]  # the schedule's entries (compile_guard.health.schedule), up to a limit
    collectives_total: int = field(default=0, metadata=_SHOWN)  # the schedule's length, however many are listed
    constants: list[list[Any]] = field(default_factory=list)  # [node index, argument path, value], up to a limit
    constants_total: int = 0  # how many constants the graph has
    constants_digest: str = field(default="", metadata=_SHOWN)  # every constant: may differ by rank (compare)
    # the settings this rank changed from torch's defaults, by name (compile_guard.health.settings)
    settings: dict[str, Any] = field(default_factory=dict, metadata=_AGREED_BY_ROWS)
    settings_digest: str = field(default="", metadata=_AGREED)  # every compared setting (health.settings)
    cut: bool = False  # the lists were emptied to fit the store's entry limit (the digests still cover all)

    def to_json(self) -> dict[str, Any]:
        """Its JSON object. The parts that are dataclasses become objects; the lists of data (collectives, constants,
        settings) are shared, not copied: a graph's whole statement is encoded up to three times (statement.fit)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Statement:
        """A statement read from the store; BadEntry naming the field when one is missing or of another type (a
        key this version does not know is left out: a newer writer's)."""
        return wire.read(cls, data, what="statement", error=BadEntry)

    def wire(self, name: str) -> Any:
        """Field `name` as it is on the wire (the reports print it so: a frame as its JSON object)."""
        value = getattr(self, name)
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


AGREED = tuple(f.name for f in dataclasses.fields(Statement) if f.metadata.get("agreed"))
SHOWN = tuple(f.name for f in dataclasses.fields(Statement) if f.metadata.get("shown"))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        return [dataclasses.asdict(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What was proven, written once on the store (protocol rule 6: the first one stands) and raised on every rank
    of the group as `error`. A Wake message tells the ranks to read it."""

    error: str = ""  # the exception every rank raises (compile_guard.agreement.watcher.ERRORS); "": ProtocolError
    kind: str = ""  # what was proven: mismatch, asymmetry, other_graph, cycle, split, issued, ended, stall, ...
    text: str = ""  # the report every rank logs, naming ranks, frames, sites and the first divergent collective
    fields: list[str] = field(default_factory=list)  # the statement fields that differ ("breaks", "path", ...)
    ranks: list[int] | None = None  # the ranks the proof is about
    slot: str | None = None  # the graph's slot (compile_guard.agreement.positions.slot_key)
    entry: int | None = None  # the ledger entry's number
    first_collective: str | None = None  # the first collective that would have diverged
    absent: list[int] | None = None  # peers that made the call without stating the slot (rule 2)
    held: dict[str, str | None] | None = None  # a wait-for cycle (rule 7): the slot each of its ranks holds
    no_answer: list[int] | None = None  # a stall's ranks that did not answer for their position
    by: int | None = None  # the rank that wrote it (set by protocol.declare)

    @classmethod
    def bad_entry(cls, text: str, *, slot: str | None = None, entry: int | None = None) -> Verdict:
        """A peer's entry or message that is not what the protocol allows: every rank stops on a ProtocolError
        (exit 3), never a divergence."""
        return cls(error="ProtocolError", kind="bad_entry", text=text, slot=slot, entry=entry)

    def to_json(self) -> dict[str, Any]:
        """Its JSON object: the fields that are set (an optional one left None is left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        """A verdict read from the store, every field checked (BadEntry naming it); a key this version does not know
        is left out (a newer writer's)."""
        return wire.read(cls, data, what="verdict", error=BadEntry)
