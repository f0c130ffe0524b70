"""Inside a rank: the compile handshake's payload and the post-warmup symmetry gate (C-01, C-03).

`compile_payload` is what every rank states about its compile settings as they *effectively*
are; `require_symmetric` gathers every rank's post-warmup compile health and stops every
rank with the diff if any differs; `HealthGate` is the engine observer that runs it after
the warmup chunk and reports progress after the others.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from tabulate import tabulate

from compile_guard import compat
from compile_guard.contracts.rank_job import RankJob
from compile_guard.health.probe import CompileProbe
from compile_guard.health.schema import symmetric_view
from compile_guard.health.settings import settings_payload
from engine import events
from engine.collectives import all_gather_json
from engine.compile import CompileConfig
from engine.control.parity import diff_table
from engine.errors import CompileAsymmetry
from engine.hooks import Hooks

log = logging.getLogger(__name__)


def compile_payload(ccfg: CompileConfig, job: RankJob) -> dict[str, Any]:
    """What every rank of the group must compile with: the compile config, every setting that changes the program
    (health.settings) and the job's options (the agreement's, the measurement's, the target: compile_guard.contracts
    .rank_job; the engine's own fields are the env handshake's)."""
    payload = {
        # effective: TORCH_COMPILE_DISABLE=1 on one rank turns compile off there alone
        "compile.enabled": ccfg.enabled and not compat.dynamo_config().disable,
        "compile.backend": ccfg.backend,
        "compile.mode": ccfg.mode,
        "compile.fullgraph": ccfg.fullgraph,
        "compile.dynamic": ccfg.dynamic,
    }
    return {**payload, **settings_payload(), **job.parity_items()}


def require_symmetric(
    health: dict[str, Any], *, group: Any, ranks: tuple[int, ...], device: Any, enabled: bool = True
) -> dict[str, Any]:
    """Gather every rank's post-warmup compile health; CompileAsymmetry with the diff if any differs (C-03).
    `enabled=False` (RunSpec.gate_health, benchmarks' bare runs only) skips the gather."""
    counts = {k: health[k] for k in ("unique_graphs", "graph_breaks", "recompiles")}
    if not enabled:
        events.emit("progress", phase="warmup_done", **counts)
        return health
    per_rank = all_gather_json(
        {"health": symmetric_view(health), "sites": health["break_sites"]}, group=group, device=device
    )
    rows = diff_table([r["health"] for r in per_rank], ranks)
    events.emit("progress", phase="warmup_done", **counts)  # after the gather: every rank's warmup is done
    if rows:
        events.emit("compile_asymmetry", keys=[r[0] for r in rows], ranks=list(ranks))
        table = tabulate(
            [[k, *(json.dumps(v)[:60] for v in vals)] for k, *vals in rows],
            headers=["metric", *(f"rank{r}" for r in ranks)],
        )
        sites = (
            "\n".join(
                f"  rank{rank}: {s['site']}  {s['reason']}  x{s['count']}  | {s.get('source', '')}"
                for rank, r in zip(ranks, per_rank, strict=True)
                for s in r["sites"]
            )
            or "  (none on any rank)"
        )
        raise CompileAsymmetry(
            f"compile health differs across ranks after warmup on {[r[0] for r in rows]}\n"
            f"{table}\ngraph-break sites:\n{sites}"
        )
    return health


class HealthGate(Hooks):
    """Engine observer: after the warmup chunk, the symmetry gate; after the others, progress."""

    def __init__(self, *, group: Any, ranks: tuple[int, ...], device: Any, enabled: bool = True) -> None:
        self.group, self.ranks, self.device, self.enabled = group, ranks, device, enabled
        self.probe: CompileProbe | None = None  # attached before the region's first call
        self.warmup: dict[str, Any] | None = None  # the post-warmup health, once gathered
        self.after_warmup: Callable[[], None] | None = None  # called once the warmup chunk is done (quality)

    def after_chunk(self, *, rank: int, chunk_index: int, generator_calls: int) -> None:
        if chunk_index != -1:
            events.emit("progress", phase="steady", chunk_index=chunk_index, generator_calls=generator_calls)
            return
        assert self.probe is not None, "attach the probe before the warmup chunk"
        if self.after_warmup is not None:
            self.after_warmup()
        self.warmup = require_symmetric(
            self.probe.snapshot(), group=self.group, ranks=self.ranks, device=self.device, enabled=self.enabled
        )
