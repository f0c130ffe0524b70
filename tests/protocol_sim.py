"""The agreement protocol simulated: N ranks on an in-memory store, their store ops interleaved at random.

Each simulated rank runs the protocol's own actors (compile_guard.agreement.protocol) — its main
thread (compile, publish, hold, run, the ledger) and its watcher — exactly as a real rank does,
but every store op is one scheduling step: the scheduler picks a ready actor at random, so one
seed is one interleaving. Time is virtual: it advances only when no actor is ready (to the next
wait's timeout, sleep or thaw), so "3 s late" and "frozen for good" cost nothing to run.

A rank's program is a list of steps: a call of a compiled frame with an input variant (a new
variant compiles: a statement, a hold at its first call), or an eager collective (the ledger).
Compiled graphs issue collectives; the simulated group checks that the i-th collective of every
rank is the same, and records any that is not: a *divergent collective that ran* — exactly what
the protocol exists to prevent. Collectives block (gloo) or run ahead up to a queue (NCCL).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from compile_guard.agreement import compare, holds, protocol
from compile_guard.agreement.entries import Break, Frame, Parent, Statement
from compile_guard.agreement.ops import Add, CompareSet, Delete, Get, Inbox, Now, Set, Wait
from compile_guard.agreement.positions import Positions, slot_key

WATCH_DEFER_S = 1.0  # the real watcher lets a holding main thread raise the verdict for this long
ASYNC_QUEUE = 4  # NCCL-like: a rank may run this many collectives ahead of the slowest peer


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Issue:
    collective: dict[str, Any]


@dataclass(frozen=True)
class Yield:
    pass


@dataclass
class Graph:
    """What one rank compiles for (frame, variant)."""

    fingerprint: str
    collectives: list[dict[str, Any]]
    constants: list[list[Any]] = field(default_factory=list)
    breaks: list[dict[str, Any]] = field(default_factory=list)  # non-empty: partial, continued by `rest`
    settings: dict[str, Any] = field(default_factory=lambda: {"dynamo.x": False})
    rest: Graph | None = None  # the resume frame's graph after the break
    rest_name: str = "resume"  # the resume frame's name (dynamo names it after the break's line)
    split: list[str] = field(default_factory=list)  # the sites of the breaks that split this graph
    issued: list[dict[str, Any]] | None = None  # what its compiled code issues, when a pass changed it (else these)


@dataclass
class Step:
    kind: str  # "call" (a compiled frame) or "eager" (a ledger collective)
    frame: str = "F"
    variant: int = 0
    eager: dict[str, Any] | None = None
    delay_s: float = 0.0  # idle before the step (a late peer, a server without requests)
    trace_s: float = 0.0  # a compile's trace time (busy), when the step compiles
    compile_s: float = 0.0  # the backend's compile time (busy)
    pause_s: float = 0.0  # frozen (SIGSTOP) this long before the step; math.inf: for good
    stuck: bool = False  # blocks forever before the step, alive (its watcher answers)


@dataclass
class Plan:
    steps: list[Step]
    graphs: dict[tuple[str, int], Graph]


@dataclass
class Outcome:
    ranks: dict[int, str]  # rank -> "finished" | "stopped" | "hung"
    verdict: dict[str, Any] | None
    violations: list[str]
    store_ops: dict[int, int]
    time: float
    verdict_at: float | None  # virtual time the verdict was written
    held_at: dict[int, float]  # each rank's last hold start


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def execute(self, op: Any, now: float) -> Any:
        if isinstance(op, Set):
            self.data[op.key] = op.value
            return None
        if isinstance(op, Get):
            return self.data.get(op.key)
        if isinstance(op, Add):
            value = int(self.data.get(op.key, b"0")) + op.amount
            self.data[op.key] = str(value).encode()
            return value
        if isinstance(op, CompareSet):
            current = self.data.get(op.key)
            if (current is None and op.expected == b"") or current == op.expected:
                self.data[op.key] = op.desired
                return op.desired
            return current
        if isinstance(op, Delete):
            return self.data.pop(op.key, None) is not None
        if isinstance(op, Now):
            return now
        raise AssertionError(f"not a store op: {op!r}")


def site_of(node: int, path: str) -> dict[str, str]:
    return {"site": f"sim.py:{node}", "key": f"sim.py forward: op {path}"}


class _Actor:
    def __init__(self, rank: int, role: str, gen: Any) -> None:
        self.rank, self.role, self.gen = rank, role, gen
        self.op: Any = None
        self.result: Any = None
        self.done = False
        self.since = 0.0

    def advance(self, result: Any) -> None:
        try:
            self.op = self.gen.send(result)
        except StopIteration:
            self.done = True


class Sim:
    def __init__(
        self,
        plans: list[Plan],
        *,
        seed: int,
        stall_s: float = 10.0,
        blocking: bool = True,
        options: compare.Options | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.plans, self.n, self.blocking = plans, len(plans), blocking
        self.options = options or compare.Options()
        self.store = MemoryStore()
        self.now = 0.0
        self.issued: dict[int, list[dict[str, Any]]] = {r: [] for r in range(self.n)}
        self.violations: list[str] = []
        self.state = dict.fromkeys(range(self.n), "running")
        self.frozen_until = dict.fromkeys(range(self.n), 0.0)
        self.ops = collections.Counter()
        self.held_at: dict[int, float] = {}
        self.verdict_at: float | None = None
        ranks = tuple(range(self.n))
        self.links = [
            protocol.Link(
                protocol.Member(
                    rank=r,
                    ranks=ranks,
                    group="g",
                    prefix="p",
                    stall_s=stall_s,
                    probe_s=1.0,
                    answer_s=2.0,
                    describe=lambda r=r: {"stack": [f"sim.py:{r}"]},
                ),
                Positions(r),
            )
            for r in ranks
        ]
        self.actors = [a for r in ranks for a in (_Actor(r, "main", self._main(r)), _Actor(r, "watch", self._watch(r)))]

    # -- a rank's two threads -------------------------------------------------------------------------------
    def _statement(self, r: int, frame: str, call: int, j: int, g: Graph, n: int, parent: Parent | None) -> Statement:
        digest = hashlib.sha256(json.dumps(g.collectives, sort_keys=True).encode()).hexdigest()[:16]
        constants_digest = hashlib.sha256(json.dumps(g.constants).encode()).hexdigest()[:16]
        return Statement(
            n=n,
            rank=r,
            slot=slot_key(frame, call, j),
            fid=frame,
            call=call,
            j=j,
            frame=Frame(name=frame, site=f"sim.py:{frame}"),
            parent=parent,
            compile_id=f"0/{n}",
            breaks=[Break(**b) for b in g.breaks],
            split=g.split,
            fingerprint=g.fingerprint,
            schedule_digest=digest,
            collectives=g.collectives,
            collectives_total=len(g.collectives),
            constants=g.constants,
            constants_total=len(g.constants),
            constants_digest=constants_digest,
            settings=g.settings,
        )

    def _compile(self, r: int, frame: str, g: Graph, step: Step, parent: Parent | None, n: int) -> Any:
        """Compile graph `g` of `frame` on rank r: its statement published, then its issued schedule; (both)."""
        link = self.links[r]
        record = link.pos.frame(frame, frame, f"sim.py:{frame}")
        statement = self._statement(r, frame, record.count, 0, g, n, parent)
        link.pos.busy, link.pos.compiles = f"0/{n}", link.pos.compiles + 1
        if step.trace_s:
            yield Sleep(step.trace_s)
        yield from protocol.publish(link, statement)
        if step.compile_s:
            yield Sleep(step.compile_s)
        collectives = g.collectives if g.issued is None else g.issued
        issued = {
            "by": "sim",
            "collectives": collectives,
            "total": len(collectives),
            "digest": hashlib.sha256(json.dumps(collectives, sort_keys=True).encode()).hexdigest()[:16],
        }
        yield from protocol.publish_issued(link, statement.slot, issued)
        link.pos.busy = ""
        return statement, issued

    def _run(
        self,
        r: int,
        frame: str,
        g: Graph,
        compiled: tuple[Statement, dict[str, Any]],
        first: bool,
        before: list[dict[str, Any]],
    ) -> Any:
        """One call of a compiled graph: count it, answer what it settles, hold it the first time, issue."""
        link, (statement, issued) = self.links[r], compiled
        link.pos.frame(frame, frame, f"sim.py:{frame}").ran(statement.slot)
        yield Yield()
        if link.pos.pending:
            yield from protocol.answer_due(link)
        if first:
            self.held_at[r] = self.now
            out = yield from holds.hold_graph(
                link, statement, before=before, site_of=site_of, options=self.options, issued=issued
            )
            if isinstance(out, protocol.Stopped):
                self._stop(r)
                return False
        for c in g.collectives:
            yield Issue(c)
        return True

    def _main(self, r: int) -> Any:
        plan, link = self.plans[r], self.links[r]
        compiled: dict[tuple[str, int], list[tuple[Statement, dict[str, Any]]]] = {}  # (statement, issued) each
        graphs = 0
        for step in plan.steps:
            if step.pause_s:
                self.frozen_until[r] = self.now + step.pause_s
                yield Yield()
            if step.delay_s:
                yield Sleep(step.delay_s)
            if step.stuck:
                yield Sleep(math.inf)
            if step.kind == "eager":
                name, n = "g", link.pos.entries.get("g", 0)
                out = yield from holds.hold_entry(
                    link, name, n, {"n": n, "rank": r, **step.eager}, [p for p in range(self.n) if p != r]
                )
                if out is not None:
                    self._stop(r)
                    return
                yield Issue(step.eager)
                continue
            g = plan.graphs[(step.frame, step.variant)]
            key = (step.frame, step.variant)
            first = key not in compiled
            if first:
                made = yield from self._compile(r, step.frame, g, step, None, graphs)
                graphs += 1
                compiled[key] = [made]
            if not (yield from self._run(r, step.frame, g, compiled[key][0], first, [])):
                return
            if g.rest is not None:  # the resume frame, inside this call of the frame
                outer = link.pos.frames[step.frame]
                parent = Parent(fid=step.frame, call=outer.count - 1)
                rest_first = len(compiled[key]) == 1
                if rest_first:
                    made = yield from self._compile(r, f"{step.frame}_{g.rest_name}", g.rest, step, parent, graphs)
                    graphs += 1
                    compiled[key].append(made)
                if not (
                    yield from self._run(
                        r, f"{step.frame}_{g.rest_name}", g.rest, compiled[key][1], rest_first, g.collectives
                    )
                ):
                    return
        yield from protocol.close(link)
        self.state[r] = "finished"

    def _watch(self, r: int) -> Any:
        link = self.links[r]
        kind, _verdict = yield from protocol.watch(link, Inbox(link.m.watch_box(r)))
        if kind == "closed":
            return
        if link.pos.holding is not None:  # the main thread is holding: it raises the verdict itself
            yield Sleep(WATCH_DEFER_S)
        self._stop(r)

    def _stop(self, r: int) -> None:
        if self.state[r] == "running":
            self.state[r] = "stopped"

    # -- the scheduler --------------------------------------------------------------------------------------
    def _issue(self, r: int, c: dict[str, Any]) -> None:
        i = len(self.issued[r])
        for p, theirs in self.issued.items():
            if p != r and len(theirs) > i and theirs[i] != c:
                self.violations.append(f"collective #{i} ran divergent: rank{p} {theirs[i]} vs rank{r} {c}")
        self.issued[r].append(c)

    def _ready(self, a: _Actor) -> bool:
        if a.done or self.state[a.rank] != "running" or self.now < self.frozen_until[a.rank]:
            return False
        op = a.op
        if isinstance(op, Wait):
            return all(k in self.store.data for k in op.keys) or self.now >= a.since + op.timeout_s
        if isinstance(op, Sleep):
            return self.now >= a.since + op.seconds
        if isinstance(op, Issue) and a.result == "issued":  # waiting for the collective to complete
            i = len(self.issued[a.rank]) - 1
            behind = min(len(s) for s in self.issued.values())
            return behind > i if self.blocking else i - behind < ASYNC_QUEUE
        return True

    def _wake_time(self, a: _Actor) -> float:
        if a.done or self.state[a.rank] != "running":
            return math.inf
        if self.now < self.frozen_until[a.rank]:
            return self.frozen_until[a.rank]
        if isinstance(a.op, Wait):
            return a.since + a.op.timeout_s
        if isinstance(a.op, Sleep):
            return a.since + a.op.seconds
        return math.inf

    def _step(self, a: _Actor) -> None:
        op = a.op
        if isinstance(op, Issue):
            if a.result != "issued":
                self._issue(a.rank, op.collective)
                a.result = "issued"
                return  # completes when _ready says so
            a.result = None
            result = None
        elif isinstance(op, Wait):
            result = all(k in self.store.data for k in op.keys)
        elif isinstance(op, (Sleep, Yield)):
            result = None
        else:
            self.ops[a.rank] += 1
            result = self.store.execute(op, self.now)
            if isinstance(op, CompareSet) and op.key.endswith("/verdict") and self.verdict_at is None:
                self.verdict_at = self.now
        a.advance(result)
        a.since = self.now
        self.now += self.rng.uniform(0.0, 2e-4)  # a store round trip

    def run(self, *, limit_s: float = 1000.0) -> Outcome:
        for a in self.actors:
            a.advance(None)
        while any(not a.done and self.state[a.rank] == "running" and a.role == "main" for a in self.actors):
            ready = [a for a in self.actors if self._ready(a)]
            if ready:
                self._step(self.rng.choice(ready))
                continue
            wake = min(self._wake_time(a) for a in self.actors)
            if wake == math.inf or wake > limit_s:
                break
            self.now = max(self.now, wake)
        ranks = {r: ("hung" if s == "running" else s) for r, s in self.state.items()}
        verdict = self.store.data.get("p/verdict")
        return Outcome(
            ranks=ranks,
            verdict=json.loads(verdict) if verdict else None,
            violations=self.violations,
            store_ops=dict(self.ops),
            time=self.now,
            verdict_at=self.verdict_at,
            held_at=self.held_at,
        )
