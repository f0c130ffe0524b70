"""Compile-time agreement, torch side: no graph runs until every rank of its group compiled the same graph.

When dynamo hands a graph to the backend, the rank states it (compile_guard.agreement.statement) on
the job's store and compiles it; the compiled callable counts every call of its frame (a local
integer: the rank's position) and, at its first call, holds until the protocol
(compile_guard.agreement.protocol) has every peer's statement of the same slot, or a proof, or a
stall. A divergence raises before the graph runs; the watcher thread of every other rank stops it
wherever it is (inside the previous graph's all-reduce, idle), so no rank runs the divergent
graph's collectives and none waits for a process-group timeout. A peer that is late is waited
for — however long — until the stall rule: no progress for `stall_s`, by default a margin under
the group's own timeout, so the report always comes before the job would have failed by itself.

Cost when nothing compiles: an increment and two flag tests per graph call (benchmarks/bench_agreement.py).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import time
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from compile_guard import compat
from compile_guard.agreement import compare, holds, protocol
from compile_guard.agreement.channel import Transport
from compile_guard.agreement.entries import Statement, Verdict
from compile_guard.agreement.ops import ChannelError
from compile_guard.agreement.positions import Positions
from compile_guard.agreement.statement import StatementMaker, fit
from compile_guard.agreement.watcher import RANK_POSITIONS, Watcher, answer_window_s, default_stall_s, describe_main
from compile_guard.health.issued import OutputCode, code_summary, issued_schedule
from compile_guard.health.schedule import group_of
from engine import events
from engine.compile import CompiledRegion

log = logging.getLogger("compile_guard.agreement")
_INSTANCES = itertools.count()  # every rank builds its agreements in the same order: the same names


class CompileAgreement:
    """One group's agreement on every graph compiled through `backend()` (or handed to `compile()`).

    stall_s: no progress from a peer for this long is a stall (default: a margin under the group's timeout);
    strict_constants: a constant that differs by rank (a vocab offset) stops the job (default: reported);
    stop_on_asymmetry: a rank-only graph break stops it even while the collective streams line up;
    exit_status: how this process ends when the watcher stops it (the rank's RankContext.exit_status)."""

    def __init__(
        self,
        *,
        group: dist.ProcessGroup,
        stall_s: float | None = None,
        strict_constants: bool = False,
        stop_on_asymmetry: bool = False,
        compile_timeout_s: float = 600.0,
        store: dist.Store | None = None,
        name: str = "compile",
        exit_status: Callable[[int], int] = int,
    ) -> None:
        timeout_s = compat.group_timeout_s(group)
        self.stall_s = default_stall_s(timeout_s) if stall_s is None else stall_s
        if not 0 < self.stall_s <= 24 * 3600:
            raise ValueError(
                f"stall_s={stall_s} is invalid; expected seconds > 0 (default: under the group's"
                f" {timeout_s:.0f}s timeout)"
            )
        self.group, self.rank = group, dist.get_rank()
        self.ranks = tuple(dist.get_process_group_ranks(group))
        self.group_name = group.group_name
        self.options = compare.Options(strict_constants=strict_constants, stop_on_asymmetry=stop_on_asymmetry)
        store = store if store is not None else compat.default_store()
        member = protocol.Member(
            rank=self.rank,
            ranks=self.ranks,
            group=self.group_name,
            stall_s=self.stall_s,
            prefix=f"compile_guard/agree/{name}{next(_INSTANCES)}/{self.group_name}",
            probe_s=min(2.0, self.stall_s / 10),
            answer_s=answer_window_s(self.stall_s, timeout_s),
            compile_s=compile_timeout_s,
            describe=describe_main,
        )
        self.positions = Positions(self.rank, siblings=RANK_POSITIONS)
        self.link = protocol.Link(member, self.positions)
        self.transport = Transport(store)  # this rank's main thread: publish, hold, answer
        self.maker = StatementMaker(self.rank, self.positions)
        self.output_code = OutputCode()  # inductor's wrapper source of each graph (its issued schedule)
        self.issued: list[dict[str, Any]] = []  # per graph stated, in compile order: what its compiled code issues
        self.code: list[dict[str, Any]] = []  # per graph stated: what its generated code holds (issued.code_summary)
        self.graphs = 0  # graphs stated so far (the next one's number)
        self.agreed = 0  # graphs every rank agreed on
        self.rank_varying: dict[str, dict[str, Any]] = {}  # constant key -> {site, values}: legitimately differ
        self.asymmetries: list[str] = []  # reports of rank-only graph breaks whose streams lined up
        self._mine: dict[str, list[dict[str, Any]]] = {}  # slot -> my collectives (a parent call's stream)
        self._closed = False
        compat.log_compile_artifacts()
        logging.getLogger(compat.BREAK_LOGGER).addHandler(self.maker.sites)
        logging.getLogger(compat.OUTPUT_CODE_LOGGER).addHandler(self.output_code)
        self._remove_callbacks = compat.on_compiles(self._compile_started, self._compile_ended)
        self.watcher = Watcher(store, self.link, event="compile_divergence", exit_status=exit_status)
        log.info(
            "compile agreement on: group=%s ranks=%s stall_s=%.1f (group timeout %.0fs)",
            self.group_name,
            list(self.ranks),
            self.stall_s,
            timeout_s,
        )

    # -- the compile path (main thread) ---------------------------------------------------------------------
    def _compile_started(self, args: Any = None) -> None:
        self.positions.busy = str(getattr(args, "compile_id", None) or "compiling")
        self.positions.compiles += 1

    def _compile_ended(self, args: Any = None) -> None:
        self.positions.busy = ""

    def backend(self, compiler: str | Callable = "inductor") -> Callable:
        """A dynamo backend: `compiler` (a backend name or callable), each graph held until the ranks agree."""
        compile_fn = compat.lookup_backend(compiler) if isinstance(compiler, str) else compiler

        def agreeing_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable:
            return self.compile(gm, example_inputs, compile_fn, inductor=compiler == "inductor")

        return agreeing_backend

    def compile(
        self, gm: torch.fx.GraphModule, example_inputs: list[Any], compile_fn: Callable, *, inductor: bool = False
    ) -> Callable:
        """State the graph, compile it with `compile_fn`, return it counting its calls, held until the agreement.
        `inductor`: `compile_fn` is inductor's, so its output code must be seen (else the schedule is `unread`)."""
        made, site_of = self.maker.make(self.graphs, gm, example_inputs)
        statement = fit(made, what=f"rank {self.rank}'s statement of graph {self.graphs}")
        self.graphs += 1
        self.transport.run(protocol.publish(self.link, statement))  # before the compile: before its first run
        hits = compat.cache_hits()
        self.output_code.take()  # what was logged outside this compile is not this graph's
        started = time.perf_counter()
        compiled = compile_fn(gm, example_inputs)
        compiled_at = time.perf_counter()
        cache = "hit" if compat.cache_hits() > hits else "compiled"  # inductor's graph cache (loaded artifacts, say)
        slot, record = statement.slot, self.positions.frames[statement.fid]
        sources = self.output_code.take()
        self.code.append(code_summary(sources))
        issued = issued_schedule(
            sources,
            made.collectives,
            cpp_wrapper=compat.inductor_cpp_wrapper(),
            group_ranks=lambda name: group_of(name)["ranks"],
            inductor=inductor,
        )
        read_ms = (time.perf_counter() - compiled_at) * 1e3  # what reading it costs (benchmarks/bench_check.py)
        self.issued.append(issued)
        self.transport.run(protocol.publish_issued(self.link, slot, issued))  # rule 9: before the first run
        self._mine[slot] = made.collectives
        log.info(
            "graph %s stated: frame=%s slot=%s compile_id=%s fingerprint=%s schedule=%s issued=%s:%s group=%s",
            made.n,
            made.frame.name,
            slot,
            made.compile_id,
            made.fingerprint,
            made.schedule_digest,
            issued["by"],
            issued["digest"],
            self.group_name,
        )
        events.emit(
            "graph_compiled",
            graph=made.n,
            slot=slot,
            compile_id=made.compile_id,
            group=self.group_name,
            cache=cache,
            issued_by=issued["by"],
            compile_s=round(compiled_at - started, 3),
            issued_read_ms=round(read_ms, 2),
            code=self.code[-1],  # kernels, loops, math calls: what a changed lowering shows in (the NU rows)
        )
        positions = self.positions
        parent = positions.frames[made.parent.fid] if made.parent else None  # a resume function's caller
        held = [True]

        def run(*args: Any) -> Any:
            record.ran(slot)  # this rank's position: one more call of this frame
            if parent is not None:  # inside a call of `parent`: my stream within that call (an asymmetry's check)
                positions.ran_inside(parent, slot)
            if positions.pending:  # a peer holding asked about a call this one settles
                self.transport.run(protocol.answer_due(self.link))
            if held[0]:
                self._gate(made, site_of, issued)
                held[0] = False
            return compiled(*args)

        return run

    def _gate(self, mine: Statement, site_of: compare.SiteOf, issued: dict[str, Any]) -> None:
        before = [c for s in self.positions.inside[:-1] for c in self._mine.get(s, [])] if mine.parent else []
        with self.watcher.waiting():
            try:
                out = self.transport.run(
                    holds.hold_graph(
                        self.link, mine, before=before, site_of=site_of, options=self.options, issued=issued
                    )
                )
            except ChannelError as exc:  # a peer's entry that is not what the protocol allows: never a hang
                out = self.transport.run(
                    protocol.declare(
                        self.link,
                        Verdict.bad_entry(
                            f"compile agreement: {exc}; the peer runs another compile_guard or its entry was cut",
                            slot=mine.slot,
                        ),
                    )
                )
            if isinstance(out, protocol.Stopped):
                self.watcher.raise_verdict(out.verdict)
        self.agreed += 1
        counts = collections.Counter(c["key"] for c in out.comparison.rank_varying)
        for found in out.comparison.rank_varying:
            self.rank_varying.setdefault(found["key"], {**found, "count": counts[found["key"]]})
        asymmetry = out.comparison.asymmetry or (
            f"rank-only graph break: ranks {list(out.covered)} ran the parent call as one graph; the streams line up"
            if out.covered
            else None
        )
        if asymmetry:
            self.asymmetries.append(asymmetry)
            log.warning("%s", asymmetry)
        events.emit(
            "compile_agreed",
            graph=mine.n,
            slot=mine.slot,
            compile_id=mine.compile_id,
            group=self.group_name,
            ranks=list(self.ranks),
            asymmetry=bool(asymmetry),
            rank_varying=[f"{c['site']} {c['values']}" for c in out.comparison.rank_varying][:8],
        )

    def close(self) -> None:
        """Leave the agreement (a final position for peers still holding); call once the rank compiles no more."""
        if self._closed:
            return
        self._closed = True
        self._remove_callbacks()
        logging.getLogger(compat.BREAK_LOGGER).removeHandler(self.maker.sites)
        logging.getLogger(compat.OUTPUT_CODE_LOGGER).removeHandler(self.output_code)
        try:
            self.transport.run(protocol.close(self.link))
        except (dist.DistError, RuntimeError) as exc:  # the store is gone: the job is over anyway
            log.info("compile agreement of group %s closes without its final position: %s", self.group_name, exc)
        self.watcher.join()
        self.positions.leave()

    def __enter__(self) -> CompileAgreement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def agree_on_compiles(group: dist.ProcessGroup, compiler: str | Callable = "inductor", **kwargs: Any) -> Callable:
    """The one call for a serving job: a dynamo backend whose graphs run only once every rank of `group`
    compiled the same graph. `torch.compile(model, backend=agree_on_compiles(tp_group))`; the backend's
    `.agreement.close()` ends it (at exit it ends with the process). Keywords: CompileAgreement's."""
    agreement = CompileAgreement(group=group, **kwargs)
    backend = agreement.backend(compiler)
    backend.agreement = agreement  # type: ignore[attr-defined]
    return backend


@contextlib.contextmanager
def agreement_on(
    region: CompiledRegion,
    *,
    group: dist.ProcessGroup,
    stall_s: float | None = None,
    enabled: bool = True,
    **kwargs: Any,
) -> Iterator[Any]:
    """`with agreement_on(region, group=...)`: every graph of the region agreed across `group` before it runs
    (nothing to agree on when the region runs eagerly, or when `enabled` is False)."""
    if not region.compiled or not enabled:
        yield None
        return
    agreement = CompileAgreement(group=group, stall_s=stall_s, **kwargs)
    try:
        with region.gated(agreement.compile):
            yield agreement
    finally:
        agreement.close()
