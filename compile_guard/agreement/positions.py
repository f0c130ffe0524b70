"""Where a rank is: how many times it ran each compiled frame, and which graph ran at which call.

In an SPMD program the n-th call of a compiled frame is the same step on every rank of the
group. Each rank counts, locally, the calls of the graphs of each frame it runs (one integer
increment in the held callable; no store traffic on the hot path) and keeps the graph that ran
from each call on (a bounded history of changes). A statement says at which call of its frame a
graph was compiled — its *slot* — so ranks pair statements by slot, never by arrival time.

A peer holding a new graph asks this rank's watcher where it is (compile_guard.agreement.protocol).
The answer is read here, under a lock, from the counters: the asked call already made (and which
graph ran at it), or not yet — then the ask stays *pending* and the main thread answers it the
moment its count passes the call (one truthiness test per graph call while nothing is pending).
No torch, no store: the protocol's actors turn these answers into messages.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any

from compile_guard.agreement.messages import Ask, Holding, Position, Where, holding_json

HISTORY = 4096  # changes of graph per frame kept; an answer about an older call says "unknown"


def slot_key(fid: str, call: int, j: int) -> str:
    """The j-th graph a rank compiled at call `call` of frame `fid`."""
    return f"{fid}.{call}.{j}"


@dataclass
class FrameRecord:
    """One compiled frame on this rank: its calls so far and which graph (slot) ran from which call on."""

    fid: str  # short hash of the frame's name and site: the same on every rank
    name: str  # the code's name, for reports
    site: str  # file:line of the code, for reports
    count: int = 0  # calls of this frame's graphs so far
    last: str | None = None  # the slot that ran last
    # (call index where a run of one slot began, that slot); one list of pairs, appended to and replaced whole,
    # so the watcher thread reading it never sees half a change
    history: list[tuple[int, str]] = field(default_factory=list)

    def ran(self, slot: str) -> int:
        """Count one call of graph `slot` (the hot path); the call's index. The history first, then the count:
        a reader sees the call only once it can tell which graph ran at it."""
        call = self.count
        if slot is not self.last:
            self.last = slot
            self.history.append((call, slot))
            if len(self.history) > 2 * HISTORY:
                self.history = self.history[HISTORY:]
        self.count = call + 1
        return call

    def slot_at(self, call: int) -> str | None:
        """The graph that ran at `call` (None: not made yet, or older than the history)."""
        history = self.history
        if call >= self.count or not history or call < history[0][0]:
            return None
        return history[bisect.bisect_right(history, call, key=lambda entry: entry[0]) - 1][1]


def where(frames: dict[str, FrameRecord], fid: str | None, call: int, parent: tuple[str, int] | None) -> Where:
    """A rank's position as far as a question about call `call` of frame `fid` (and its parent call) goes."""
    record = frames.get(fid) if fid is not None else None
    outer = frames.get(parent[0]) if parent is not None else None
    return Where(
        fid=fid,
        call=call,
        count=record.count if record else 0,
        ran=record.slot_at(call) if record else None,
        parent_ran=outer.slot_at(parent[1]) if outer is not None and parent is not None else None,
    )


def frames_of(final: dict[str, Any]) -> dict[str, FrameRecord]:
    """A departed rank's frames from its final position (compile_guard.agreement.protocol.close)."""
    return {
        fid: FrameRecord(
            fid=fid,
            name=f["name"],
            site=f["site"],
            count=f["count"],
            history=[(int(c), str(s)) for c, s in f["history"]],
        )
        for fid, f in (final.get("frames") or {}).items()
    }


class Positions:
    """One rank's counters, shared by its main thread (counts, statements) and its watcher (answers)."""

    def __init__(self, rank: int, siblings: list[Positions] | None = None) -> None:
        self.rank = rank
        # the counters of this rank's other agreements and ledgers: progress in any of them is progress, and a
        # report shows them all (the simulation gives each simulated rank one Positions and no siblings)
        self.siblings = siblings if siblings is not None else []
        self.siblings.append(self)
        self.frames: dict[str, FrameRecord] = {}
        self.stated: set[str] = set()  # slots this rank has stated
        self.busy = ""  # the compile id while this rank compiles, "" otherwise
        self.compiles = 0  # compiles started: progress while nothing runs
        self.entries: dict[str, int] = {}  # ledger entries issued per group name
        self.holding: Holding | None = None  # what the main thread waits for now (rule 7, the reports)
        self.pending: list[Ask] = []  # asks about calls not made yet; the hot path tests its truth
        self.inside: list[str] = []  # the slots run so far inside the current call of a parent frame, in order
        self._inside_of: tuple[str, int] | None = None  # that call: (parent frame, its call count)
        self._lock = threading.Lock()

    def frame(self, fid: str, name: str, site: str) -> FrameRecord:
        return self.frames.setdefault(fid, FrameRecord(fid=fid, name=name, site=site))

    def ran_inside(self, parent: FrameRecord, slot: str) -> None:
        """A resume function's graph ran inside the parent's current call (after the parent's own graph, which
        `parent.last` is): my collectives within one call of the parent are those slots', in order."""
        call = (parent.fid, parent.count)
        if call != self._inside_of:
            self._inside_of, self.inside = call, [parent.last] if parent.last else []
        self.inside.append(slot)

    def progress(self) -> list[int]:
        """Changes whenever this rank advances, in any agreement of its: graph calls, compiles, ledger entries."""
        # list() copies a dict's values in one step under the GIL: the main thread may add a frame meanwhile
        siblings = list(self.siblings)
        return [
            sum(f.count for p in siblings for f in list(p.frames.values())),
            sum(p.compiles for p in siblings),
            sum(n for p in siblings for n in list(p.entries.values())),
        ]

    def leave(self) -> None:
        if self in self.siblings:
            self.siblings.remove(self)

    def _answer(self, ask: Ask) -> Position:
        # What this rank holds, read before its counts: a rank seen holding a graph stays there (its counts frozen)
        # until every peer states that graph, so the counts read after it are the ones it holds at (rule 7).
        holding = self.holding
        return Position(
            sender=self.rank,
            to=ask.sender,
            seq=ask.seq,
            busy=self.busy,
            progress=self.progress(),
            holding=holding,
            at=where(self.frames, ask.fid, ask.call, ask.parent),
            stated=sorted(s for s in tuple(self.stated) if s.startswith(f"{ask.fid}.{ask.call}.")),
        )

    @staticmethod
    def _settled(ask: Ask, answer: Position) -> bool:
        """Whether the answer can no longer change what the asker decides (the call made, or its parent's)."""
        return answer.at.count > ask.call or answer.at.parent_ran is not None

    def answer(self, ask: Ask) -> Position:
        """Where this rank is, for `ask` (watcher thread); pending until the asked call is made."""
        with self._lock:
            self.pending = [p for p in self.pending if p.sender != ask.sender]  # one open question per asker
            answer = self._answer(ask)
            if ask.fid is not None and not self._settled(ask, answer):
                self.pending = [*self.pending, ask]  # registered before the count was read: never missed
            return answer

    def now_holding(self) -> list[Position]:
        """Fresh answers to every pending ask, posted when this rank begins a hold (the askers may learn from it
        that no rank can go on: rule 7); the asks stay pending."""
        with self._lock:
            return [self._answer(ask) for ask in self.pending]

    def due(self) -> list[Position]:
        """Answers to pending asks that the main thread's progress settled (called while `pending`)."""
        with self._lock:
            answers = [(ask, self._answer(ask)) for ask in self.pending]
            settled = [a for ask, a in answers if self._settled(ask, a)]
            if settled:
                self.pending = [ask for ask, a in answers if not self._settled(ask, a)]
            return settled

    def waiting_for(self, prefix: str) -> list[int]:
        """Askers whose open question is about calls of slot prefix `fid.call.` (told when this rank states)."""
        with self._lock:
            return sorted({ask.sender for ask in self.pending if prefix.startswith(f"{ask.fid}.{ask.call}.")})

    def final(self) -> dict[str, Any]:
        """What a holder needs of this rank once it has left: its last position, with a short history."""
        tail = 64
        return {
            "entries": dict(self.entries),
            "frames": {
                f.fid: {"name": f.name, "site": f.site, "count": f.count, "history": f.history[-tail:]}
                for f in list(self.frames.values())
            },
        }

    def report(self) -> dict[str, Any]:
        """Everything a stall report shows of this rank, over all its agreements (the watcher adds its stack)."""
        siblings = list(self.siblings)
        holding = next((p.holding for p in siblings if p.holding), None)
        return {
            "rank": self.rank,
            "holding": holding_json(holding),
            "busy": next((p.busy for p in siblings if p.busy), ""),
            "entries": {g: n for p in siblings for g, n in list(p.entries.items())},
            "frames": {
                f.fid: {"name": f.name, "site": f.site, "calls": f.count, "graph": f.last}
                for p in siblings
                for f in list(p.frames.values())
            },
        }


class Progress:
    """When an awaited peer last moved, as seen by a holder (compile_guard.agreement.holds); the stall clock.
    `m`: the holder's protocol.Member (its stall_s, compile_s, probe_s)."""

    def __init__(self, m: Any, now: float) -> None:
        self.m, self.last = m, now
        self.tokens: dict[int, Any] = {}
        self.busy_since: dict[tuple[int, str], float] = {}
        self.asked_at: dict[int, float] = {}

    def moved(self, now: float) -> None:
        self.last = now

    def answer(self, peer: int, msg: Position, now: float) -> None:
        token = (msg.progress, msg.busy)
        if self.tokens.get(peer, token) != token:
            self.last = now
        self.tokens[peer] = token
        if msg.busy:  # compiling is progress, for one compile up to compile_s
            since = self.busy_since.setdefault((peer, msg.busy), now)
            if now - since < self.m.compile_s:
                self.last = now

    def should_ask(self, peer: int, now: float) -> bool:
        return peer not in self.asked_at or now - self.asked_at[peer] >= self.m.probe_s

    def remaining(self, now: float) -> float:
        return self.last + self.m.stall_s - now
