"""Per-rank compile health: what dynamo made of one compiled region, as plain data.

The probe collects observations (compile_guard.health.schema.Observations); the schema
turns them into metrics.

Sources, none of them log scraping for counts:
- graphs: the region's recording backend (each graph dynamo handed to the compiler);
  fingerprinted by structure (compile_guard.health.structure), with op counts and the number
  of functional collectives inside the graph;
- graph breaks: dynamo's `graph_break` counter, keyed by a *normalised* reason
  (compile_guard.health.policy.reason_key: the break's title, never its registry id, the
  message's object reprs or addresses), so a torch upgrade moves a baseline only where
  behaviour moved; a title the upgrade renamed is matched by its sites (`policy.reworded`);
- break sites: dynamo's graph-break artifact log records (user file:line) captured by a
  handler, the only place dynamo states the site;
- recompiles and guards: dynamo's compilation metrics (one record per frame compile;
  compile id "frame/n" with n > 0 is a recompile, with dynamo's recompile reason).
"""

from __future__ import annotations

import collections
import logging
import re
from typing import Any

import torch

from compile_guard import compat
from compile_guard.health.policy import reason_key
from compile_guard.health.schedule import collective_schedule
from compile_guard.health.schema import CompileHealth, Observations
from compile_guard.health.sites import BreakSites, relative_site
from compile_guard.health.structure import graph_structure
from engine.compile import CompiledRegion

_FUNCTIONAL_COLLECTIVE = "_c10d_functional."
MAX_BASELINED = 64  # issued collectives per graph a baseline keeps (its digest covers all)
_METRICS_LIMIT = 100_000  # dynamo keeps 64 compile records by default; a graph cliff makes more


def graph_fingerprint(gm: torch.fx.GraphModule) -> dict[str, Any]:
    """The graph's structure fingerprint and op counts (compile_guard.health.structure: constants and the rank's
    own device index are not structure, so ranks of one SPMD program agree on it)."""
    return {k: v for k, v in graph_structure(gm).items() if k not in ("constants", "constants_digest")}


class CompileProbe:
    """Attach before the region's first call; `snapshot()` any time after."""

    def __init__(self, region: CompiledRegion) -> None:
        self.region = region
        self.agreement: Any = None  # the compile agreement: its `rank_varying` constants, once judged; `issued`
        self._metrics_start = compat.compile_records(0, limit=_METRICS_LIMIT)[1]
        self._sites = BreakSites()
        self._schedules: list[dict[str, Any]] = []  # per graph, in compile order: after dispatch
        if region.compiled:
            region.observe_graphs(lambda gm, inputs: self._schedules.append(collective_schedule(gm, inputs)))
        compat.log_compile_artifacts()
        logging.getLogger(compat.BREAK_LOGGER).addHandler(self._sites)

    def observe(
        self, *, effective_backend: dict[str, Any] | None = None, warmup_recompiles: int | None = None
    ) -> Observations:
        by_reason: collections.Counter = collections.Counter()
        for message, count in self.region.graph_breaks().items():
            by_reason[reason_key(message)] += count
        compiles = []
        for m in compat.compile_records(self._metrics_start, limit=_METRICS_LIMIT)[0]:
            _frame, _, attempt = (m["compile_id"] or "0/0").partition("/")
            attempt = attempt.split("_")[0]
            reason = m["recompile_reason"] or "?"
            if reason != compat.NO_RECOMPILE_REASON:  # dynamo's "<n> recompilations: <guard>", one line
                reason = reason.split(":", 1)[-1].strip().splitlines()[0]
            compiles.append(
                {
                    "frame": m["co_name"],
                    "site": relative_site(m["co_filename"] or "?", m["co_firstlineno"] or 0),
                    "attempt": int(attempt) if attempt.isdigit() else 0,
                    "reason": re.sub(r"\s+", " ", reason)[:200],
                    "guard_count": m["guard_count"] or 0,
                }
            )
        return Observations(
            graph_count=self.region.graph_count,
            graphs=[graph_fingerprint(gm) for gm in self.region.graphs],
            schedules=list(self._schedules),
            break_reasons=dict(by_reason),
            break_sites=sorted(
                [
                    {"reason": gb, "key": key, "site": s, "count": n, "source": self._sites.source.get(s, "")}
                    for (gb, key, s), n in self._sites.breaks.items()
                ],
                key=lambda d: (d["site"], d["reason"]),
            ),
            compiles=compiles,
            effective_backend=effective_backend or {},
            warmup_recompiles=warmup_recompiles,
            rank_varying=list(self.agreement.rank_varying.values()) if self.agreement else [],
            issued=[
                {"by": i["by"], "digest": i["digest"], "collectives": i["collectives"][:MAX_BASELINED]}
                for i in (self.agreement.issued if self.agreement else [])
            ],
            code=list(self.agreement.code) if self.agreement else [],
        )

    def health(self, **context: Any) -> CompileHealth:
        """Every metric of the schema (context: effective_backend, warmup_recompiles): the rank report's `final`."""
        return CompileHealth.measure(self.observe(**context))

    def snapshot(self, **context: Any) -> dict[str, Any]:
        """Every metric of the schema, as JSON: what the ranks gather and compare after warmup."""
        return self.health(**context).to_json()
