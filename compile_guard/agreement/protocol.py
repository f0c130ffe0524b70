"""The agreement protocol between the ranks of a group: stop on proof, at once; without proof, wait.

Actors are generators of store ops (compile_guard.agreement.ops): no thread, no clock, no torch.
The rank's main thread runs `publish` (when it compiles a graph), `hold_graph` (at the graph's
first call) and `hold_entry` (the ledger, before an eager collective; both in
compile_guard.agreement.holds); its watcher thread runs `watch`. The same actors run on the
job's TCPStore and in the simulation test.

Rules, as the code below enforces them:
1. Pairing is by **slot** — (frame, the call of the frame at which the graph was compiled, j) —
   never by time. A peer that has not stated the slot is *late*, not absent.
2. **Proof of a divergence**: a peer's statement of the slot differs (compile_guard.agreement.compare);
   or the peer *made that call* without stating the slot. A rank states every graph it compiles
   at a call before it makes the call (`publish` precedes the graph's first run, and the count of
   the call happens in that run), so once its count is past the call, the statement can never come:
   it ran another graph there (a rank-only recompile, a rank-only break).
3. A frame compiled inside another compiled call (a resume function after a graph break) names that
   call as its **parent**. A peer that ran the parent call as one complete graph (no break) never
   runs this frame inside it: the holder compares its own stream of collectives within the parent
   call with the peer's, and goes on while the streams line up (an asymmetry, reported).
4. Asking: the holder posts its question to the peer's watcher; the watcher answers from the
   peer's counters at once, or — when the asked call is not made yet — leaves the ask pending and
   the peer's main thread answers when its count passes the call (compile_guard.agreement.positions).
   Every message is only a wake-up with a hint: the holder re-reads the statement keys after each
   (the messages, typed, and their one registry of kinds: compile_guard.agreement.messages).
5. **Stall**: no progress from any awaited peer (no statement, no answer that moved, no compile
   under `compile_s` old) for `stall_s` — then every rank's position is gathered and reported, and
   every rank stops with the stall's own code. Nothing else is decided by a clock.
6. The first verdict written (compare-and-set) stands; its writer wakes every rank.
7. **A wait-for cycle is proof.** A rank holding a graph is frozen: its counts do not move and it states
   nothing until every peer has stated that graph (or covers it, rule 3). So when I hold slot A, a peer
   holds slot B != A, the peer has not stated A (read after its answer), I have not stated B and my
   position cannot cover B, neither of us can ever go on: in an SPMD program the ranks reach their
   slots in one order, so the ranks took different paths (a rank-only break that skipped or split a
   frame, each rank breaking somewhere else). A rank that begins a hold tells the peers whose questions
   are pending (`tell_holding`), so the cycle is seen the moment its second hold begins. A peer that is
   compiling, running, idle, or holding in another agreement or the ledger is not in the cycle: waited for.
8. **A parent call split elsewhere is proof.** I hold a frame compiled inside a parent call; a peer ran that
   call as a graph split at other breaks than mine (`split`: the breaks logged while its graph was
   traced): it goes on in a resume function of its own and never runs mine in that call. Split at the
   same breaks: it runs mine next (late, waited for); not split at all: rule 3.
9. **The issued schedule.** What the compiled code issues is decided after the statement, by the
   compiler's own passes (inductor's bucketing, reordering, overlap scheduling). Each rank states it
   (`publish_issued`, compile_guard.health.issued) the moment its compile ends, before the graph's
   first run; once every peer's statement agrees, the hold waits for every peer's issued schedule (a
   peer still compiling is progress) and a difference is proof: every rank stops before the first
   divergent collective, which the report names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from compile_guard.agreement import compare, proofs
from compile_guard.agreement.entries import BadEntry, Statement, Verdict
from compile_guard.agreement.messages import Ask, Closed, Report, Stated, Wake
from compile_guard.agreement.ops import (
    Actor,
    ChannelError,
    CompareSet,
    Inbox,
    Now,
    Set,
    Wait,
    decode,
    encode,
    post,
    read,
)
from compile_guard.agreement.positions import Positions

WATCH_SLICE_S = 600.0  # the watcher's wait for its next message, renewed until it closes


@dataclass(frozen=True, kw_only=True)
class Member:
    """One rank's place in one agreement (a group and a key prefix on the store)."""

    rank: int  # this rank (global)
    ranks: tuple[int, ...]  # every rank that agrees here (a ledger's: those of all its groups)
    group: str  # the group's name, for the reports
    prefix: str  # store key prefix of this agreement
    stall_s: float  # no progress for this long: the stall report, then every rank stops
    probe_s: float = 1.0  # a holder re-asks a silent peer this often (its progress), never to decide
    answer_s: float = 2.0  # the stall report waits this long for each rank's position
    compile_s: float = 600.0  # a peer compiling one graph for longer than this makes no progress
    # a holder first reads the statements that arrive within this much, then asks the peers still silent: in the
    # usual case (ranks compile within milliseconds of each other) nobody is asked; a proof costs this much more
    first_ask_s: float = 0.05
    describe: Callable[[], dict[str, Any]] = field(default=lambda: {})  # this rank's stack etc. (the driver's)

    def statement(self, slot: str, rank: int) -> str:
        return f"{self.prefix}/s/{slot}/{rank}"

    def issued(self, slot: str, rank: int) -> str:
        return f"{self.prefix}/i/{slot}/{rank}"

    def entry(self, name: str, n: int, rank: int) -> str:
        return f"{self.prefix}/e/{name}/{n}/{rank}"

    @property
    def verdict(self) -> str:
        return f"{self.prefix}/verdict"

    def final(self, rank: int) -> str:
        return f"{self.prefix}/final/{rank}"

    def main_box(self, rank: int) -> str:
        return f"{self.prefix}/m/{rank}"

    def watch_box(self, rank: int) -> str:
        return f"{self.prefix}/w/{rank}"


@dataclass(frozen=True)
class Agreed:
    comparison: compare.Comparison
    covered: tuple[int, ...] = ()  # peers whose complete parent graph covers this slot (an asymmetry)


@dataclass(frozen=True)
class Stopped:
    verdict: Verdict  # the verdict that stands (maybe another rank's)


class Link:
    """One rank's end of one agreement: who it is, its counters, its main thread's inbox."""

    def __init__(self, member: Member, positions: Positions) -> None:
        self.m, self.pos = member, positions
        self.inbox = Inbox(member.main_box(member.rank))
        self.seq = 0  # questions asked so far (answers carry it back)
        self.left: set[int] = set()  # peers that said they left the agreement (their final position is written)
        self.verdict_posted = True  # a verdict message came (or may have): read the verdict key; True at first


def read_verdict(link: Link) -> Actor:
    """The verdict that stands, or None; ChannelError when the entry is no verdict of this version (a protocol
    error on every rank, exit 3)."""
    data = yield from read(link.m.verdict, what="the verdict")
    return None if data is None else _verdict(data)


def _verdict(data: Any) -> Verdict:
    try:
        return Verdict.from_json(data)
    except BadEntry as exc:
        raise ChannelError(f"the verdict: {exc}") from None


def read_statement(m: Member, slot: str, rank: int) -> Actor:
    """`rank`'s statement of `slot`, or None when it has not stated it; ChannelError when the entry is no statement
    of this version (the gate stops every rank on a protocol error: never a divergence, never a hang)."""
    what = f"rank {rank}'s statement of slot {slot}"
    data = yield from read(m.statement(slot, rank), what=what)
    try:
        return None if data is None else Statement.from_json(data)
    except BadEntry as exc:
        raise ChannelError(f"{what}: {exc}") from None


def declare(link: Link, verdict: Verdict) -> Actor:
    """Write the verdict unless one stands; wake every rank (watcher and main thread); the standing one."""
    m = link.m
    standing = yield CompareSet(m.verdict, b"", encode({**verdict.to_json(), "by": m.rank}, what="the verdict"))
    # the peers first: this rank's own watcher may end this process the moment it is woken
    for box in [m.watch_box(r) for r in m.ranks if r != m.rank] + [m.main_box(r) for r in m.ranks if r != m.rank]:
        yield from post(box, Wake())
    yield from post(m.watch_box(m.rank), Wake())
    return Stopped(_verdict(decode(standing, what="the verdict")))


def publish(link: Link, statement: Statement) -> Actor:
    """State a graph (before it is compiled, so before its first run); tell the askers waiting for its call."""
    m, pos = link.m, link.pos
    slot = statement.slot
    yield Set(m.statement(slot, m.rank), encode(statement.to_json(), what=f"rank {m.rank}'s statement"))
    pos.stated.add(slot)
    for asker in pos.waiting_for(slot):
        yield from post(m.main_box(asker), Stated(sender=m.rank, slot=slot))


def publish_issued(link: Link, slot: str, issued: dict[str, Any]) -> Actor:
    """State the collectives the compiled graph of `slot` will issue (rule 9), once its compile ends."""
    m, what = link.m, f"rank {link.m.rank}'s issued schedule"
    value = {**issued, "rank": m.rank, "slot": slot}
    try:
        data = encode(value, what=what)
    except ChannelError:  # a very long schedule: its list cut, its digest kept (compared all the same)
        data = encode({**value, "collectives": [], "cut": True}, what=what)
    yield Set(m.issued(slot, m.rank), data)


def tell_holding(link: Link) -> Actor:
    """This rank just began a hold: tell every peer whose question is pending (rule 7); the asks stay pending."""
    for answer in link.pos.now_holding():
        yield from post(link.m.main_box(answer.to), answer)


def answer_due(link: Link) -> Actor:
    """Post the answers the main thread's last call settled (run while `positions.pending`)."""
    for answer in link.pos.due():
        yield from post(link.m.main_box(answer.to), answer)


def stall(link: Link, *, what: str, since: float) -> Actor:
    """Gather every rank's position (its watcher answers; `answer_s` each), report, stop every rank."""
    m, pos = link.m, link.pos
    # One report per stall: the first holder to claim it gathers; the others wait for its verdict (and gather
    # themselves only if none comes: the claimer may have died)
    me = str(m.rank).encode()
    if (yield CompareSet(f"{m.prefix}/stalling", b"", me)) != me:
        now = yield Now()
        deadline = now + 2 * m.answer_s + 1.0
        while now < deadline:
            verdict = yield from read_verdict(link)
            if verdict is not None:
                return Stopped(verdict)
            yield Wait((m.verdict,), max(0.01, min(0.5, deadline - now)))
            now = yield Now()
    link.seq += 1
    seq = link.seq
    for r in m.ranks:
        if r != m.rank:
            yield from post(m.watch_box(r), Ask(sender=m.rank, seq=seq, full=True))
    reports: dict[int, dict[str, Any]] = {m.rank: {**pos.report(), **m.describe()}}
    now = yield Now()
    deadline = now + m.answer_s
    while len(reports) < len(m.ranks) and now < deadline:
        msg = yield from link.inbox.receive(deadline - now)
        if isinstance(msg, Report) and msg.seq == seq:
            reports[msg.sender] = msg.row
        now = yield Now()
    text = proofs.stall_text(m.group, list(m.ranks), reports, what=what, quiet_s=now - since, now=now)
    return (
        yield from declare(
            link,
            Verdict(
                error="Stalled",
                kind="stall",
                fields=[],
                ranks=list(m.ranks),
                no_answer=[r for r in m.ranks if r not in reports],
                text=text,
            ),
        )
    )


def watch(link: Link, inbox: Inbox) -> Actor:
    """The watcher thread: answer asks from this rank's counters; return ("verdict", v) or ("closed", None)."""
    m, pos = link.m, link.pos
    while True:
        try:
            msg = yield from inbox.receive(WATCH_SLICE_S)
        except ChannelError as exc:
            return "error", Verdict.bad_entry(f"agreement: {exc}")
        if msg is None:
            continue
        if isinstance(msg, Closed):
            return "closed", None
        if isinstance(msg, Wake):
            verdict = yield from read_verdict(link)
            # Pass it on to the next two ranks of the ring before this rank stops: a declarer stopped (or killed)
            # while it was waking everyone must not leave a rank unwoken; two, so one frozen rank breaks no chain.
            ring = list(m.ranks)
            at = ring.index(m.rank)
            for r in {ring[(at + k) % len(ring)] for k in (1, 2)} - {m.rank}:
                yield from post(m.watch_box(r), Wake())
            return "verdict", verdict or Verdict(text="woken for a verdict that is not on the store")
        if not isinstance(msg, Ask):
            continue
        if msg.full:
            answer = Report(sender=m.rank, seq=msg.seq, row={**pos.report(), **m.describe()})
        else:
            answer = pos.answer(msg)
        yield from post(m.main_box(msg.sender), answer)


def close(link: Link) -> Actor:
    """Leave the agreement (main thread): write this rank's final position, so a peer still holding learns it
    will never state what it waits for; wake those peers and this rank's watcher (to end)."""
    m, pos = link.m, link.pos
    yield Set(m.final(m.rank), encode(pos.final(), what=f"rank {m.rank}'s final position"))
    for peer in m.ranks:  # every peer: one that reads no final position before this wakes up after it
        if peer != m.rank:
            yield from post(m.main_box(peer), Stated(sender=m.rank, slot=None))
    yield from post(m.watch_box(m.rank), Closed())
