"""Compile-time agreement: no graph runs until every rank of its group compiled the same graph.

When dynamo hands a graph to the backend, the rank publishes its statement (frame, compile id,
fingerprint, collective schedule, settings: compile_guard.agreement.statement) on the side
channel and compiles; the compiled callable is held back until its first call, where the rank
waits for its peers' statements of the same graph number and compares. A peer that is not
compiling and states nothing within `window_s` did not compile this graph at all (a rank-only
recompile): that is a divergence too. The first rank to see a divergence writes the verdict
and raises CompileDivergence before the graph runs; a watcher thread on every rank wakes on
the verdict and stops its rank wherever it is — mid-step inside a collective of the previous
graph, or idle — so no rank ever runs the divergent graph's collectives, and none waits for a
process-group timeout.

Cost when nothing compiles: one flag test per graph call (benchmarks/bench_divergence.py).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from compile_guard.agreement import statement as st
from compile_guard.agreement.channel import ChannelError, SideChannel, default_store, now
from compile_guard.agreement.watcher import Watcher
from compile_guard.health.sites import BREAK_LOGGER
from engine import events
from engine.compile import CompiledRegion

log = logging.getLogger("compile_guard.agreement")
_INSTANCES = itertools.count()  # every rank builds its agreements in the same order: the same names
BUSY_S = 10.0  # a peer inside a dynamo compile is waited for this much longer at a time (up to compile_timeout_s)


def _cache_hits() -> int:
    """Inductor's FX-graph and AOT-autograd cache hits so far in this process (loaded artifacts hit them)."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"]


class CompileAgreement:
    """One group's agreement on every graph compiled through `backend()` (or handed to `compile()`)."""

    def __init__(self, *, group: dist.ProcessGroup, window_s: float = 2.0, compile_timeout_s: float = 600.0,
                 store: dist.Store | None = None, name: str = "compile") -> None:  # fmt: skip
        if not 0 < window_s <= 60:
            raise ValueError(f"window_s={window_s} is invalid; expected seconds in (0, 60] (default 2)")
        if compile_timeout_s < window_s:
            raise ValueError(f"compile_timeout_s={compile_timeout_s} is shorter than window_s={window_s}")
        self.group, self.window_s, self.compile_timeout_s = group, window_s, compile_timeout_s
        self.ranks = tuple(dist.get_process_group_ranks(group))
        self.rank = dist.get_rank()
        self.group_name = group.group_name
        prefix = f"compile_guard/agree/{name}{next(_INSTANCES)}/{self.group_name}"
        store = store if store is not None else default_store()
        self.channel = SideChannel(store, prefix=prefix)  # this rank's main thread: publish, busy, compare
        self.maker = st.StatementMaker(self.rank)
        self.graphs = 0  # graphs stated so far (the next one's number)
        self.agreed = 0  # graphs every rank agreed on
        self._closed = False
        torch._logging.set_logs(graph_breaks=True)
        breaks = logging.getLogger(BREAK_LOGGER)
        breaks.addHandler(self.maker.sites)
        breaks.propagate = False
        from torch._dynamo.callback import callback_handler

        self._callbacks = (callback_handler.register_start_callback(self._compile_started),
                           callback_handler.register_end_callback(self._compile_ended))  # fmt: skip
        self.watcher = Watcher(store, prefix=prefix, rank=self.rank, group=self.group_name, ranks=self.ranks,
                               event="compile_divergence")  # fmt: skip
        log.info("compile agreement on: group=%s ranks=%s window_s=%s", self.group_name, list(self.ranks), window_s)

    # -- the compile path (main thread) ---------------------------------------------------------------------
    def _compile_started(self, args: Any = None) -> None:
        self.channel.set_busy(self.rank, str(getattr(args, "compile_id", "?")))

    def _compile_ended(self, args: Any = None) -> None:
        self.channel.set_busy(self.rank, "")

    def backend(self, compiler: str | Callable = "inductor") -> Callable:
        """A dynamo backend: `compiler` (a backend name or callable), each graph held until the ranks agree."""
        compile_fn = torch._dynamo.lookup_backend(compiler) if isinstance(compiler, str) else compiler

        def agreeing_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable:
            return self.compile(gm, example_inputs, compile_fn)

        return agreeing_backend

    def compile(self, gm: torch.fx.GraphModule, example_inputs: list[Any], compile_fn: Callable) -> Callable:
        """State the graph, compile it with `compile_fn`, return it held back until the agreement."""
        statement = self.maker.make(self.graphs, gm, example_inputs)
        self.graphs += 1
        try:
            self.channel.publish(statement["n"], self.rank, statement, what=f"rank {self.rank}'s statement")
        except ChannelError:  # our own statement too large even cut: say so to the peers, never hang them
            statement = {**statement, "collectives": [], "oversized": True}
            self.channel.publish(statement["n"], self.rank, statement, what=f"rank {self.rank}'s statement")
        hits = _cache_hits()
        compiled = compile_fn(gm, example_inputs)
        cache = "hit" if _cache_hits() > hits else "compiled"  # inductor's graph cache (loaded artifacts, say)
        log.info("graph %s stated: frame=%s compile_id=%s fingerprint=%s schedule=%s group=%s", statement["n"],
                 statement["frame"]["name"], statement["compile_id"], statement["fingerprint"],
                 statement["schedule_digest"], self.group_name)  # fmt: skip
        events.emit("graph_compiled", graph=statement["n"], compile_id=statement["compile_id"], group=self.group_name,
                    cache=cache)  # fmt: skip
        held = {"agreed": False}

        def run(*args: Any) -> Any:
            if not held["agreed"]:
                self._gate(statement)
                held["agreed"] = True
            return compiled(*args)

        return run

    def _gate(self, mine: dict[str, Any]) -> None:
        with self.watcher.waiting():
            verdict = self._await(mine)
            if verdict is not None:
                self.watcher.raise_verdict(verdict)
        self.agreed += 1
        events.emit("compile_agreed", graph=mine["n"], compile_id=mine["compile_id"], group=self.group_name,
                    ranks=list(self.ranks))  # fmt: skip

    def _await(self, mine: dict[str, Any]) -> dict[str, Any] | None:
        """Every peer's statement of graph n, compared; the verdict that stands if any rank found one.

        Each wait on the store lasts until the peer's window ends, so a healthy agreement never times out
        a wait (a timed-out wait is also a line in the c10d log); a peer still compiling gets BUSY_S more."""
        n, peers = mine["n"], {r: None for r in self.ranks if r != self.rank}
        start = now()
        window_end = dict.fromkeys(peers, start + self.window_s)
        while any(v is None for v in peers.values()):
            standing = self.channel.verdict()
            if standing is not None:
                return standing
            for r in [r for r, v in peers.items() if v is None]:
                try:
                    remaining = window_end[r] - now()
                    if remaining > 0 and self.channel.wait_for(n, r, remaining):
                        peers[r] = self.channel.read(n, r, what=f"rank {r}'s statement of graph {n}")
                        continue
                    # busy first, then the statement: a peer states before its compile ends, so one that
                    # stated between the wait and this look is seen here, never taken for absent
                    busy = self.channel.busy(r)
                    if self.channel.has("s", n, r):
                        peers[r] = self.channel.read(n, r, what=f"rank {r}'s statement of graph {n}")
                        continue
                except ChannelError as exc:
                    return self._declare({"error": "ProtocolError", "kind": "bad_entry", "graph": n, "fields": [],
                                          "text": f"compile agreement: {exc}; the peer runs another compile_guard"
                                                  " or its store entry was cut"})  # fmt: skip
                if busy and now() - start < self.compile_timeout_s:
                    window_end[r] = now() + max(self.window_s, BUSY_S)  # still compiling (maybe this graph)
                    continue
                return self._declare(self._missing(mine, r, busy, waited_s=now() - start))
        statements = sorted([mine, *peers.values()], key=lambda s: s["rank"])
        fields = st.differing(statements)
        return self._declare(self._mismatch(statements, fields)) if fields else None

    # -- verdicts ------------------------------------------------------------------------------------------
    def _header(self, n: int) -> str:
        return (f"compile divergence in group {self.group_name} (ranks {list(self.ranks)}) at graph #{n}, stopped"
                " before the graph's first run (none of its collectives ran)")  # fmt: skip

    def _mismatch(self, statements: list[dict[str, Any]], fields: list[str]) -> dict[str, Any]:
        first = st.first_differing_collective(statements)
        text = "\n".join([self._header(statements[0]["n"]), *(f"  {st.describe(s)}" for s in statements),
                          f"differs: {fields}", st.table(statements),
                          f"first differing collective: {first or '(schedules agree)'}",
                          "graph breaks since the previous graph:", st.breaks_text(statements)])  # fmt: skip
        return {"error": "CompileDivergence", "kind": "mismatch", "graph": statements[0]["n"], "fields": fields,
                "ranks": [s["rank"] for s in statements], "first_collective": first, "text": text}  # fmt: skip

    def _latest_for_frame(self, rank: int, mine: dict[str, Any]) -> dict[str, Any] | None:
        """The graph `rank` runs for this frame: its latest agreed statement of the same code."""
        for n in range(mine["n"] - 1, -1, -1):
            try:
                theirs = self.channel.read(n, rank, what=f"rank {rank}'s statement of graph {n}")
            except ChannelError:
                return None
            if theirs is not None and theirs.get("frame") == mine["frame"]:
                return theirs
        return None

    def _missing(self, mine: dict[str, Any], rank: int, busy: str, *, waited_s: float) -> dict[str, Any]:
        state = f"still compiling {busy} after {waited_s:.1f}s" if busy else "not compiling: running or idle"
        theirs = self._latest_for_frame(rank, mine)
        lines = [self._header(mine["n"]), f"  {st.describe(mine)}",
                 f"  rank {rank} compiled no graph #{mine['n']} within {self.window_s:.1f}s ({state})"]  # fmt: skip
        if theirs is not None:
            pair = sorted([mine, theirs], key=lambda s: s["rank"])
            lines += [f"  rank {rank} runs graph #{theirs['n']} for this frame (compile id {theirs['compile_id']})",
                      st.table(pair),
                      f"first differing collective: {st.first_differing_collective(pair) or '(schedules agree)'}"]
        lines += ["graph breaks since the previous graph:", st.breaks_text([mine])]
        first = st.first_differing_collective(sorted([mine, theirs], key=lambda s: s["rank"])) if theirs else None
        return {"error": "CompileDivergence", "kind": "missing", "graph": mine["n"], "fields": ["graph"],
                "ranks": [mine["rank"]], "absent": [rank], "first_collective": first, "text": "\n".join(lines)}

    def _declare(self, verdict: dict[str, Any]) -> dict[str, Any]:
        return self.channel.declare({**verdict, "by": self.rank}, self.ranks)

    def close(self) -> None:
        """Stop the watcher and the compile callbacks; call once the rank compiles and runs no more."""
        if self._closed:
            return
        self._closed = True
        from torch._dynamo.callback import callback_handler

        callback_handler.remove_start_callback(self._callbacks[0])
        callback_handler.remove_end_callback(self._callbacks[1])
        logging.getLogger(BREAK_LOGGER).removeHandler(self.maker.sites)
        self.watcher.close(self.channel)

    def __enter__(self) -> CompileAgreement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def agree_on_compiles(group: dist.ProcessGroup, compiler: str | Callable = "inductor", **kwargs: Any) -> Callable:
    """The one call for a serving job: a dynamo backend whose graphs run only once every rank of `group`
    compiled the same graph. `torch.compile(model, backend=agree_on_compiles(tp_group))`; the backend's
    `.agreement.close()` ends it (at exit it ends with the process)."""
    agreement = CompileAgreement(group=group, **kwargs)
    backend = agreement.backend(compiler)
    backend.agreement = agreement  # type: ignore[attr-defined]
    return backend


@contextlib.contextmanager
def agreement_on(region: CompiledRegion, *, group: dist.ProcessGroup, window_s: float,
                 enabled: bool = True) -> Iterator[Any]:  # fmt: skip
    """`with agreement_on(region, group=...)`: every graph of the region agreed across `group` before it runs
    (nothing to agree on when the region runs eagerly, or when `enabled` is False)."""
    if region.recorder is None or not enabled:
        yield None
        return
    agreement = CompileAgreement(group=group, window_s=window_s)
    region.recorder.gate = agreement.compile
    try:
        yield agreement
    finally:
        region.recorder.gate = None
        agreement.close()
