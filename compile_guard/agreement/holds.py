"""The holds: a rank's main thread waiting, before a new graph's first run or an eager collective, until the
peers' statements (or entries) are in and judged, or a proof or a stall ends the wait.

Part of the protocol (compile_guard.agreement.protocol, whose docstring numbers the rules these enforce):
generators of store ops, no thread, no clock, no torch.
"""

from __future__ import annotations

from typing import Any

from compile_guard.agreement import judge
from compile_guard.agreement.messages import Ask, Position, Stated, Wake
from compile_guard.agreement.ops import Actor, Delete, Now, Set, Wait, encode, post, read
from compile_guard.agreement.positions import frames_of, where
from compile_guard.agreement.protocol import Agreed, Link, Member, Stopped, declare, stall, tell_holding


class _Progress:
    """When an awaited peer last moved, as seen by a holder; the stall clock."""

    def __init__(self, m: Member, now: float) -> None:
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


def _ask(link: Link, peer: int, fid: str | None = None, call: int = 0, parent: tuple[str, int] | None = None) -> Actor:
    """Ask `peer` where it is with call `call` of frame `fid` (None: only how far it is; never pending)."""
    link.seq += 1
    yield from post(link.m.watch_box(peer), Ask(sender=link.m.rank, seq=link.seq, fid=fid, call=call, parent=parent))


def _receive(link: Link, timeout_s: float, first_seq: int, answers: dict[int, Position],
             progress: _Progress, now: float) -> Actor:  # fmt: skip
    """Wait up to `timeout_s` for a message, then drain the inbox; answers to this hold's questions kept.
    The peers a message came from (their keys are worth reading again), or None when none came (read all)."""
    touched: set[int] = set()
    msg = yield from link.inbox.receive(timeout_s)
    if msg is None:
        return None
    while msg is not None:
        sender = msg.sender
        if isinstance(msg, Position) and msg.seq >= first_seq:
            answers[msg.sender] = msg
            progress.answer(msg.sender, msg, now)
        elif isinstance(msg, Stated):
            progress.moved(now)
            if msg.slot is None:  # the peer left: its final position is on the store
                link.left.add(msg.sender)
        elif isinstance(msg, Wake):
            link.verdict_posted = True
        if sender is not None:
            touched.add(sender)
        msg = yield from link.inbox.receive(0)
    return touched


def _continuation(link: Link, mine: dict[str, Any], before: list[dict[str, Any]], peer: int,
                  parent: dict[str, Any], options: judge.Options) -> Actor:  # fmt: skip
    """A peer ran the parent call in one graph: do my collectives inside that call line up with its?"""
    stream, theirs = [*before, *(mine.get("collectives") or [])], parent.get("collectives") or []
    parted = judge.streams_part({link.m.rank: stream, peer: theirs})
    if parted is None and len(stream) > len(theirs):
        parted = (len(theirs), f"#{len(theirs)}: rank{link.m.rank} {judge.collective(stream[len(theirs)])} |"
                               f" rank{peer} (none)")  # fmt: skip
    if parted is None and not options.stop_on_asymmetry:
        return None
    text = (f"{judge.header(link.m.group, list(link.m.ranks), mine)}\n  {judge.describe(mine)}\n  rank {peer} ran"
            f" the whole parent call (frame '{parent['frame']['name']}' call {parent.get('call')}) as one graph:"
            f" this frame never runs inside it there\n" + (f"collective streams part at {parted[1]}" if parted else
            "collective streams line up (a rank-only graph break)"))  # fmt: skip
    kind = "mismatch" if parted else "asymmetry"
    return (yield from declare(link, {"error": "CompileDivergence", "kind": kind, "fields": ["breaks"],
                                      "ranks": sorted([link.m.rank, peer]), "slot": mine["slot"],
                                      "first_collective": parted[1] if parted else None, "text": text}))


def _split_elsewhere(link: Link, mine: dict[str, Any], before: list[dict[str, Any]], peer: int,
                     theirs: dict[str, Any]) -> Actor:  # fmt: skip
    """Rule 8: the peer ran my parent call as a graph split at other breaks than mine: it goes on in a resume
    function of its own, never in mine (Stopped); split at the same breaks: it runs mine next (None: late)."""
    m, parent = link.m, mine["parent"]
    record = link.pos.frames.get(parent["fid"])
    ran = record.slot_at(parent["call"]) if record is not None else None
    own = None if ran is None else (yield from read(m.statement(ran, m.rank), what="my statement"))
    if own is None or sorted(judge.split_sites(own)) == sorted(judge.split_sites(theirs)):
        return None
    stream = [*before, *(mine.get("collectives") or [])]
    verdict = judge.split_elsewhere(m.group, list(m.ranks), mine, own, theirs, {m.rank: stream, peer: [
        *(theirs.get("collectives") or [])]})  # fmt: skip
    return (yield from declare(link, verdict))


def _decide(link: Link, mine: dict[str, Any], peer: int, answer: Position, before: list[dict[str, Any]],
            options: judge.Options) -> Actor:  # fmt: skip
    """What a peer's position (read *after* its statement was found absent) proves: Stopped, a complete parent
    graph that covers the slot (rule 3), or None (late: wait)."""
    m, call, at = link.m, mine["call"], answer.at
    if at.count > call:  # rule 2: the call made, the statement never coming
        ran = at.ran
        other = None if ran is None else (yield from read(m.statement(ran, peer), what="a statement"))
        return (yield from declare(link, judge.other_graph(m.group, list(m.ranks), mine, peer, other, ran)))
    if mine.get("parent") and at.parent_ran:  # rule 3
        whole = yield from read(m.statement(at.parent_ran, peer), what="a statement")
        if whole is not None and not judge.split_sites(whole):
            stopped = yield from _continuation(link, mine, before, peer, whole, options)
            return whole if stopped is None else stopped
        if whole is not None:  # rule 8: split too; where it split decides which resume function it runs next
            stopped = yield from _split_elsewhere(link, mine, before, peer, whole)
            if stopped is not None:
                return stopped
    if answer.final:  # the peer left the agreement before making this call: it never will
        ended = f"(it ended after {at.count} calls of this frame)"
        return (yield from declare(link, judge.other_graph(m.group, list(m.ranks), mine, peer, None, ended)))
    held = answer.holding
    if held and held.get("what") == "graph" and held.get("slot") not in (None, mine["slot"]):
        return (yield from _cycle(link, mine, peer, answer, held, before))
    return None


def _cycle(link: Link, mine: dict[str, Any], peer: int, answer: Position, held: dict[str, Any],
           before: list[dict[str, Any]]) -> Actor:  # fmt: skip
    """Rule 7: the peer holds another slot. Stopped when it waits for me as I wait for it; None when it may yet
    go on without me (I stated its slot, I made its call, or my complete parent graph may cover it)."""
    m, pos = link.m, link.pos
    slot = held["slot"]
    if slot in pos.stated:  # it waits for someone else, or reads my statement now
        return None
    parent = held.get("parent")
    mine_there = where(pos.frames, held.get("fid"), int(held.get("call") or 0), tuple(parent) if parent else None)
    if mine_there.count > int(held.get("call") or 0):  # I made its call: its own rule 2 proof comes
        return None
    if mine_there.parent_ran:  # rules 3 and 8 from its side: my graph of its parent call decides for it
        return None
    theirs = yield from read(m.statement(slot, peer), what=f"rank {peer}'s statement of slot {slot}")
    streams = None
    if mine.get("parent") and answer.at.parent_ran:  # both inside one parent call: compare what each issued
        split = yield from read(m.statement(answer.at.parent_ran, peer), what=f"rank {peer}'s statement")
        if split is not None and theirs is not None:
            streams = {m.rank: [*before, *(mine.get("collectives") or [])],
                       peer: [*(split.get("collectives") or []), *(theirs.get("collectives") or [])]}
    return (yield from declare(link, judge.cycle(m.group, list(m.ranks), mine, peer, theirs, held, streams)))


def hold_graph(link: Link, mine: dict[str, Any], *, before: list[dict[str, Any]], site_of: judge.SiteOf,
               options: judge.Options, issued: dict[str, Any]) -> Actor:  # fmt: skip
    """Hold my new graph `mine` until every peer's statement of its slot is in and judged, then every such peer's
    issued schedule (rule 9; `issued`: mine), or a proof or a stall ends it. `before`: my collectives issued
    earlier inside the same parent call. Agreed or Stopped."""
    m, pos = link.m, link.pos
    peers = [r for r in m.ranks if r != m.rank]
    slot, call, parent = mine["slot"], mine["call"], mine.get("parent")
    theirs: dict[int, dict[str, Any]] = {}
    covered: dict[int, dict[str, Any]] = {}
    answers: dict[int, Position] = {}
    start = yield Now()
    progress, first_seq = _Progress(m, start), link.seq + 1
    outer = (parent["fid"], parent["call"]) if parent else None
    pos.holding = {"what": "graph", "n": mine.get("n"), "frame": mine["frame"], "call": call, "since": start,
                   "slot": slot, "fid": mine["fid"], "parent": list(outer) if outer else None}  # fmt: skip
    if pos.pending:  # peers asked about calls I have not made: they may be holding too (rule 7)
        yield from tell_holding(link)
    touched: set[int] | None = None  # the peers worth reading again; None: every undecided one

    def undecided() -> list[int]:
        return [p for p in peers if p not in theirs and p not in covered]

    try:
        while True:
            if link.verdict_posted or touched is None:
                link.verdict_posted = False
                verdict = yield from read(m.verdict, what="the verdict")
                if verdict is not None:
                    return Stopped(verdict)
            for p in [p for p in undecided() if touched is None or p in touched]:
                # The final position first: a peer writes it after every statement, so one read before the
                # statement can never hide a statement that came in between
                final = None
                if p in link.left:
                    final = yield from read(m.final(p), what=f"rank {p}'s final position")
                statement = yield from read(m.statement(slot, p), what=f"rank {p}'s statement of slot {slot}")
                if statement is not None:
                    theirs[p] = statement
                    continue
                answer = answers.get(p) if final is None else Position(
                    sender=p, to=m.rank, seq=0, busy="", progress=[], holding=None, stated=[], final=True,
                    at=where(frames_of(final), mine["fid"], call, outer))  # fmt: skip
                decided = None if answer is None else (yield from _decide(link, mine, p, answer, before, options))
                if isinstance(decided, Stopped):
                    return decided
                if decided is not None:
                    covered[p] = decided
            if not undecided():
                break
            now = yield Now()
            asking = now - start >= m.first_ask_s
            for p in undecided() if asking else []:
                if progress.should_ask(p, now):
                    yield from _ask(link, p, mine["fid"], call, outer)
                    progress.asked_at[p] = now
            if asking:
                touched = yield from _receive(link, max(0.0, min(m.probe_s, progress.remaining(now))), first_seq,
                                              answers, progress, now)  # fmt: skip
            else:  # the first slice: wait for the statements themselves (no message tells of them)
                keys = tuple(m.statement(slot, p) for p in undecided())
                yield Wait(keys, max(0.001, start + m.first_ask_s - now))
                touched = None
            now = yield Now()
            if progress.remaining(now) <= 0:
                return (yield from stall(link, what=f"graph #{mine.get('n')} of frame '{mine['frame']['name']}'"
                                         f" ({mine['frame']['site']}) at call {call}, from ranks {undecided()}",
                                         since=progress.last))  # fmt: skip
        statements = sorted([mine, *theirs.values()], key=lambda s: s["rank"])
        judgement = judge.judge(statements, group=m.group, site_of=site_of, options=options)
        if judgement.verdict is not None:
            return (yield from declare(link, judgement.verdict))
        found = yield from _await_issued(link, mine, sorted(theirs), progress)
        if isinstance(found, Stopped):
            return found
        verdict = judge.issued_mismatch(m.group, list(m.ranks), statements, {m.rank: issued, **found},
                                        asymmetric=judgement.asymmetry is not None)  # fmt: skip
        if verdict is not None:
            return (yield from declare(link, verdict))
    finally:
        pos.holding = None
    return Agreed(judgement, covered=tuple(sorted(covered)))


def _await_issued(link: Link, mine: dict[str, Any], peers: list[int], progress: _Progress) -> Actor:
    """Rule 9: every peer's issued schedule of my slot (each states it once its compile ends: a peer still
    compiling is progress). {peer: issued}, or Stopped (a verdict, or a stall)."""
    m, slot = link.m, mine["slot"]
    found: dict[int, dict[str, Any]] = {}
    answers: dict[int, Position] = {}
    first_seq = link.seq + 1
    while True:
        now = yield Now()
        for p in [p for p in peers if p not in found]:
            it = yield from read(m.issued(slot, p), what=f"rank {p}'s issued schedule of slot {slot}")
            if it is not None:
                found[p] = it
                progress.moved(now)
        missing = [p for p in peers if p not in found]
        if not missing:
            return found
        verdict = yield from read(m.verdict, what="the verdict")
        if verdict is not None:
            return Stopped(verdict)
        yield from _receive(link, 0, first_seq, answers, progress, now)
        if progress.remaining(now) <= 0:
            return (yield from stall(link, what=f"the issued schedule of graph #{mine.get('n')} of frame"
                                     f" '{mine['frame']['name']}' at call {mine['call']}, from ranks {missing}",
                                     since=progress.last))  # fmt: skip
        for p in missing:
            if progress.should_ask(p, now):  # how far it is (compiling is progress); never pending
                yield from _ask(link, p)
                progress.asked_at[p] = now
        yield Wait(tuple(m.issued(slot, p) for p in missing), max(0.01, min(m.probe_s, progress.remaining(now))))


def hold_entry(link: Link, name: str, n: int, mine: dict[str, Any], peers: list[int]) -> Actor:
    """The ledger: publish my entry n of group `name`, wait for every peer's entry n (late = wait); a different
    entry n, or a peer that left before issuing it, is proof at once. None when they agree; else Stopped."""
    m, pos = link.m, link.pos
    yield Set(m.entry(name, n, m.rank), encode(mine, what=f"rank {m.rank}'s ledger entry"))
    pos.entries[name] = n + 1
    theirs: dict[int, dict[str, Any]] = {}
    answers: dict[int, Position] = {}
    start = yield Now()
    progress, first_seq = _Progress(m, start), link.seq + 1
    pos.holding = {"what": "ledger", "group": name, "entry": n, "op": mine.get("op"), "since": start}
    try:
        while True:
            now = yield Now()
            for p in [p for p in peers if p not in theirs]:
                final = None  # read first, when the peer said it left: see hold_graph
                if p in link.left:
                    final = yield from read(m.final(p), what=f"rank {p}'s final position")
                entry = yield from read(m.entry(name, n, p), what=f"rank {p}'s ledger entry {n}")
                if entry is not None:
                    theirs[p] = entry
                    progress.moved(now)
                elif final is not None:
                    return (yield from declare(link, judge.ledger_ended(name, n, mine, p, final)))
            mismatch = judge.ledger_mismatch(name, n, sorted([mine, *theirs.values()], key=lambda e: e["rank"]))
            if mismatch is not None:
                return (yield from declare(link, mismatch))
            if len(theirs) == len(peers):
                break
            verdict = yield from read(m.verdict, what="the verdict")
            if verdict is not None:
                return Stopped(verdict)
            yield from _receive(link, 0, first_seq, answers, progress, now)
            if progress.remaining(now) <= 0:
                missing = [p for p in peers if p not in theirs]
                return (yield from stall(link, what=f"eager collective #{n} ({mine.get('op')}) on group {name}, from"
                                         f" ranks {missing}", since=progress.last))  # fmt: skip
            for p in [p for p in peers if p not in theirs]:
                if progress.should_ask(p, now):
                    yield from _ask(link, p)
                    progress.asked_at[p] = now
            yield Wait(tuple(m.entry(name, n, p) for p in peers if p not in theirs),
                       max(0.01, min(m.probe_s, progress.remaining(now))))
    finally:
        pos.holding = None
    if n >= 1:  # every peer published its entry n after reading my n-1: nobody reads it again
        yield Delete(m.entry(name, n - 1, m.rank))
    return None
