"""The holds: a rank's main thread waiting, before a new graph's first run or an eager collective, until the
peers' statements (or entries) are in and judged, or a proof or a stall ends the wait.

Part of the protocol (compile_guard.agreement.protocol, whose docstring numbers the rules these enforce):
generators of store ops, no thread, no clock, no torch.
"""

from __future__ import annotations

from typing import Any

from compile_guard.agreement import compare, proofs
from compile_guard.agreement.entries import Statement, Verdict
from compile_guard.agreement.messages import Ask, HeldEntry, HeldGraph, Position, Stated, Wake
from compile_guard.agreement.ops import Actor, Delete, Now, Set, Wait, encode, post, read
from compile_guard.agreement.positions import Progress, frames_of, where
from compile_guard.agreement.protocol import (
    Agreed,
    Link,
    Stopped,
    declare,
    read_statement,
    read_verdict,
    stall,
    tell_holding,
)


def _ask(link: Link, peer: int, fid: str | None = None, call: int = 0, parent: tuple[str, int] | None = None) -> Actor:
    """Ask `peer` where it is with call `call` of frame `fid` (None: only how far it is; never pending)."""
    link.seq += 1
    yield from post(link.m.watch_box(peer), Ask(sender=link.m.rank, seq=link.seq, fid=fid, call=call, parent=parent))


def _receive(
    link: Link, timeout_s: float, first_seq: int, answers: dict[int, Position], progress: Progress, now: float
) -> Actor:
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


class GraphHold:
    """Holding my new graph `mine` before its first run: every peer's statement of its slot is read and judged, then
    every such peer's issued schedule (rule 9; `issued`: mine), unless a proof or a stall ends the hold. `before`:
    my collectives issued earlier inside the same parent call. Each step below names the rule it applies
    (compile_guard.agreement.protocol numbers them); `run()` is the hold itself: Agreed or Stopped."""

    def __init__(
        self,
        link: Link,
        mine: Statement,
        *,
        before: list[dict[str, Any]],
        site_of: compare.SiteOf,
        options: compare.Options,
        issued: dict[str, Any],
    ) -> None:
        self.link, self.m, self.mine = link, link.m, mine
        self.before, self.site_of, self.options, self.issued = before, site_of, options, issued
        parent = mine.parent
        self.outer = (parent.fid, parent.call) if parent else None  # the parent call mine runs inside

    def my_stream(self) -> list[dict[str, Any]]:
        """My collectives within the parent call, up to and including this graph's."""
        return [*self.before, *self.mine.collectives]

    def run(self) -> Actor:
        link, m, pos, mine = self.link, self.m, self.link.pos, self.mine
        peers = [r for r in m.ranks if r != m.rank]
        slot, call, outer = mine.slot, mine.call, self.outer
        theirs: dict[int, Statement] = {}
        covered: dict[int, Statement] = {}  # a peer's complete parent graph that covers my slot (rule 3)
        answers: dict[int, Position] = {}
        start = yield Now()
        progress, first_seq = Progress(m, start), link.seq + 1
        pos.holding = HeldGraph(
            slot=slot, fid=mine.fid, call=call, n=mine.n, frame=mine.frame, parent=outer, since=start
        )
        if pos.pending:  # rule 7: peers asked about calls I have not made: they may be holding too
            yield from tell_holding(link)
        touched: set[int] | None = None  # the peers worth reading again; None: every undecided one

        def undecided() -> list[int]:
            return [p for p in peers if p not in theirs and p not in covered]

        try:
            while True:
                if link.verdict_posted or touched is None:  # rule 6: a verdict stands
                    link.verdict_posted = False
                    verdict = yield from read_verdict(link)
                    if verdict is not None:
                        return Stopped(verdict)
                for p in [p for p in undecided() if touched is None or p in touched]:
                    # The final position first: a peer writes it after every statement, so one read before the
                    # statement can never hide a statement that came in between
                    final = None
                    if p in link.left:
                        final = yield from read(m.final(p), what=f"rank {p}'s final position")
                    statement = yield from read_statement(m, slot, p)
                    if statement is not None:  # rule 1: paired by slot
                        theirs[p] = statement
                        continue
                    answer = answers.get(p) if final is None else self.left_at(p, final)
                    decided = None if answer is None else (yield from self.decide(p, answer))
                    if isinstance(decided, Stopped):
                        return decided
                    if decided is not None:
                        covered[p] = decided
                if not undecided():
                    break
                now = yield Now()
                asking = now - start >= m.first_ask_s
                for p in undecided() if asking else []:  # rule 4: ask the peers still silent
                    if progress.should_ask(p, now):
                        yield from _ask(link, p, mine.fid, call, outer)
                        progress.asked_at[p] = now
                if asking:
                    touched = yield from _receive(
                        link, max(0.0, min(m.probe_s, progress.remaining(now))), first_seq, answers, progress, now
                    )
                else:  # the first slice: wait for the statements themselves (no message tells of them)
                    keys = tuple(m.statement(slot, p) for p in undecided())
                    yield Wait(keys, max(0.001, start + m.first_ask_s - now))
                    touched = None
                now = yield Now()
                if progress.remaining(now) <= 0:
                    return (yield from self.rule5_stall(f"from ranks {undecided()}", progress))
            statements = sorted([mine, *theirs.values()], key=lambda s: s.rank)
            comparison = compare.compare(statements, group=m.group, site_of=self.site_of, options=self.options)
            if comparison.verdict is not None:  # rule 2: a statement differs
                return (yield from declare(link, comparison.verdict))
            found = yield from self.rule9_issued(sorted(theirs), progress)
            if isinstance(found, Stopped):
                return found
            verdict = proofs.issued_mismatch(
                m.group,
                list(m.ranks),
                statements,
                {m.rank: self.issued, **found},
                asymmetric=comparison.asymmetry is not None,
            )
            if verdict is not None:
                return (yield from declare(link, verdict))
        finally:
            pos.holding = None
        return Agreed(comparison, covered=tuple(sorted(covered)))

    def left_at(self, peer: int, final: dict[str, Any]) -> Position:
        """A peer that left the agreement: its position read from the final one it wrote (it makes no more calls)."""
        at = where(frames_of(final), self.mine.fid, self.mine.call, self.outer)
        return Position(
            sender=peer, to=self.m.rank, seq=0, busy="", progress=[], holding=None, stated=[], final=True, at=at
        )

    def decide(self, peer: int, answer: Position) -> Actor:
        """What a peer's position (read *after* its statement was found absent) proves: Stopped, a complete parent
        graph that covers the slot (rule 3), or None (late: wait, rule 1)."""
        m, mine, at = self.m, self.mine, answer.at
        if at.count > mine.call:
            return (yield from self.rule2_made_the_call(peer, at.ran))
        if mine.parent and at.parent_ran:
            whole = yield from read_statement(m, at.parent_ran, peer)
            if whole is not None and not compare.split_sites(whole):
                stopped = yield from self.rule3_whole_parent(peer, whole)
                return whole if stopped is None else stopped
            if whole is not None:
                stopped = yield from self.rule8_split_elsewhere(peer, whole)
                if stopped is not None:
                    return stopped
        if answer.final:
            return (yield from self.rule2_left(peer, at.count))
        held = answer.holding
        if isinstance(held, HeldGraph) and held.slot != mine.slot:
            return (yield from self.rule7_cycle(peer, answer, held))
        return None

    def rule2_made_the_call(self, peer: int, ran: str | None) -> Actor:
        """Rule 2: the peer made my call without stating my slot: it ran another graph there (its statement, when
        its history still has it, shows which)."""
        m = self.m
        other = None if ran is None else (yield from read_statement(m, ran, peer))
        return (yield from declare(self.link, proofs.other_graph(m.group, list(m.ranks), self.mine, peer, other, ran)))

    def rule2_left(self, peer: int, count: int) -> Actor:
        """Rule 2, from a final position: the peer left the agreement before making my call: it never will."""
        m, ended = self.m, f"(it ended after {count} calls of this frame)"
        return (yield from declare(self.link, proofs.other_graph(m.group, list(m.ranks), self.mine, peer, None, ended)))

    def rule3_whole_parent(self, peer: int, parent: Statement) -> Actor:
        """Rule 3: the peer ran the parent call in one graph: do my collectives inside that call line up with its?
        None: they do (an asymmetry, reported unless `stop_on_asymmetry`); else Stopped."""
        m, mine = self.m, self.mine
        stream, theirs = self.my_stream(), parent.collectives
        parted = compare.streams_part({m.rank: stream, peer: theirs})
        if parted is None and len(stream) > len(theirs):
            parted = (
                len(theirs),
                f"#{len(theirs)}: rank{m.rank} {compare.collective(stream[len(theirs)])} | rank{peer} (none)",
            )
        if parted is None and not self.options.stop_on_asymmetry:
            return None
        text = (
            f"{compare.header(m.group, list(m.ranks), mine)}\n  {compare.describe(mine)}\n  rank {peer} ran"
            f" the whole parent call (frame '{parent.frame.name}' call {parent.call}) as one graph:"
            f" this frame never runs inside it there\n"
            + (
                f"collective streams part at {parted[1]}"
                if parted
                else "collective streams line up (a rank-only graph break)"
            )
        )
        verdict = Verdict(
            error="CompileDivergence",
            kind="mismatch" if parted else "asymmetry",
            fields=["breaks"],
            ranks=sorted([m.rank, peer]),
            slot=mine.slot,
            first_collective=parted[1] if parted else None,
            text=text,
        )
        return (yield from declare(self.link, verdict))

    def rule8_split_elsewhere(self, peer: int, theirs: Statement) -> Actor:
        """Rule 8: the peer ran my parent call as a graph split at other breaks than mine: it goes on in a resume
        function of its own, never in mine (Stopped); split at the same breaks: it runs mine next (None: late)."""
        m, mine, (fid, call) = self.m, self.mine, self.outer
        record = self.link.pos.frames.get(fid)
        ran = record.slot_at(call) if record is not None else None
        own = None if ran is None else (yield from read_statement(m, ran, m.rank))
        if own is None or sorted(compare.split_sites(own)) == sorted(compare.split_sites(theirs)):
            return None
        streams = {m.rank: self.my_stream(), peer: [*theirs.collectives]}
        return (
            yield from declare(self.link, proofs.split_elsewhere(m.group, list(m.ranks), mine, own, theirs, streams))
        )

    def rule7_cycle(self, peer: int, answer: Position, held: HeldGraph) -> Actor:
        """Rule 7: the peer holds another slot. Stopped when it waits for me as I wait for it; None when it may yet
        go on without me (I stated its slot, I made its call, or my complete parent graph may cover it)."""
        m, pos, mine = self.m, self.link.pos, self.mine
        slot = held.slot
        if slot in pos.stated:  # it waits for someone else, or reads my statement now
            return None
        mine_there = where(pos.frames, held.fid, held.call, held.parent)
        if mine_there.count > held.call:  # I made its call: its own rule 2 proof comes
            return None
        if mine_there.parent_ran:  # rules 3 and 8 from its side: my graph of its parent call decides for it
            return None
        theirs = yield from read_statement(m, slot, peer)
        streams = None
        if mine.parent and answer.at.parent_ran:  # both inside one parent call: compare what each issued
            split = yield from read_statement(m, answer.at.parent_ran, peer)
            if split is not None and theirs is not None:
                streams = {m.rank: self.my_stream(), peer: [*split.collectives, *theirs.collectives]}
        return (yield from declare(self.link, proofs.cycle(m.group, list(m.ranks), mine, peer, theirs, held, streams)))

    def rule9_issued(self, peers: list[int], progress: Progress) -> Actor:
        """Rule 9: every peer's issued schedule of my slot (each states it once its compile ends: a peer still
        compiling is progress). {peer: issued}, or Stopped (a verdict, or a stall)."""
        link, m, slot = self.link, self.m, self.mine.slot
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
            verdict = yield from read_verdict(link)
            if verdict is not None:
                return Stopped(verdict)
            yield from _receive(link, 0, first_seq, answers, progress, now)
            if progress.remaining(now) <= 0:
                return (yield from self.rule5_stall(f"from ranks {missing}", progress, issued=True))
            for p in missing:
                if progress.should_ask(p, now):  # how far it is (compiling is progress); never pending
                    yield from _ask(link, p)
                    progress.asked_at[p] = now
            yield Wait(tuple(m.issued(slot, p) for p in missing), max(0.01, min(m.probe_s, progress.remaining(now))))

    def rule5_stall(self, waiting: str, progress: Progress, *, issued: bool = False) -> Actor:
        """Rule 5: no awaited peer made progress for stall_s: every rank's position reported, every rank stopped."""
        mine, frame = self.mine, self.mine.frame
        if issued:
            what = f"the issued schedule of graph #{mine.n} of frame '{frame.name}' at call {mine.call}"
        else:
            what = f"graph #{mine.n} of frame '{frame.name}' ({frame.site}) at call {mine.call}"
        return (yield from stall(self.link, what=f"{what}, {waiting}", since=progress.last))


def hold_graph(link: Link, mine: Statement, **kwargs: Any) -> Actor:
    """`GraphHold(link, mine, before=..., site_of=..., options=..., issued=...).run()`: Agreed or Stopped."""
    return (yield from GraphHold(link, mine, **kwargs).run())


def hold_entry(link: Link, name: str, n: int, mine: dict[str, Any], peers: list[int]) -> Actor:
    """The ledger: publish my entry n of group `name`, wait for every peer's entry n (late = wait); a different
    entry n, or a peer that left before issuing it, is proof at once. None when they agree; else Stopped."""
    m, pos = link.m, link.pos
    yield Set(m.entry(name, n, m.rank), encode(mine, what=f"rank {m.rank}'s ledger entry"))
    pos.entries[name] = n + 1
    theirs: dict[int, dict[str, Any]] = {}
    answers: dict[int, Position] = {}
    start = yield Now()
    progress, first_seq = Progress(m, start), link.seq + 1
    pos.holding = HeldEntry(group=name, entry=n, op=mine.get("op"), since=start)
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
                    return (yield from declare(link, proofs.ledger_ended(name, n, mine, p, final)))
            mismatch = proofs.ledger_mismatch(name, n, sorted([mine, *theirs.values()], key=lambda e: e["rank"]))
            if mismatch is not None:
                return (yield from declare(link, mismatch))
            if len(theirs) == len(peers):
                break
            verdict = yield from read_verdict(link)
            if verdict is not None:
                return Stopped(verdict)
            yield from _receive(link, 0, first_seq, answers, progress, now)
            if progress.remaining(now) <= 0:
                missing = [p for p in peers if p not in theirs]
                return (
                    yield from stall(
                        link,
                        what=f"eager collective #{n} ({mine.get('op')}) on group {name}, from ranks {missing}",
                        since=progress.last,
                    )
                )
            for p in [p for p in peers if p not in theirs]:
                if progress.should_ask(p, now):
                    yield from _ask(link, p)
                    progress.asked_at[p] = now
            yield Wait(
                tuple(m.entry(name, n, p) for p in peers if p not in theirs),
                max(0.01, min(m.probe_s, progress.remaining(now))),
            )
    finally:
        pos.holding = None
    if n >= 1:  # every peer published its entry n after reading my n-1: nobody reads it again
        yield Delete(m.entry(name, n - 1, m.rank))
    return None
