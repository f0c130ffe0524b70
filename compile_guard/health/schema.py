"""The compile-health schema: every metric, how it is judged, its default and how it is measured.

One dataclass, `CompileHealth`; each field is a metric and says
- `judged`: COUNTED (more = regression, fewer = improvement), REASONS (a count per break
  reason, judged like COUNTED per reason), KEPT (fewer = regression: work left the graph;
  more is reported), REPORTED (a change is reported, a regression only under --strict),
  ISSUED (per graph: p2p reordered or a collective gone = regression, another change reported)
  or DETAIL (in the probe output for the report, never in a baseline);
- `symmetric`: whether it must be equal on every rank of a group after warmup (C-03);
- its default: what a baseline written before the field existed reads as;
- `measure`: how it is computed from one rank's `Observations` (engine-agnostic facts the
  probe collects from dynamo: graphs, breaks, compile records).

The probe output, the symmetric view, the policy and the baseline loader all derive from
this table. Adding a metric = one field here (plus a new observation in probe.py only if
it needs a fact the probe does not collect yet). No torch import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

COUNTED, REASONS, KEPT, REPORTED, DETAIL = "counted", "reasons", "kept", "reported", "detail"
ISSUED = "issued"  # per graph, what its compiled code issues: judged by health.issued.change


@dataclass(frozen=True, kw_only=True)
class Observations:
    """What the probe saw on one rank, as plain data."""

    graph_count: int  # graphs dynamo handed the compiler (the recording backend)
    graphs: list[dict[str, Any]]  # per graph: fingerprint, nodes, ops, collectives, op_counts
    schedules: list[dict[str, Any]]  # per graph: its collective schedule after dispatch (health.schedule)
    break_reasons: dict[str, int]  # normalised break reason -> count
    break_sites: list[dict[str, Any]]  # {reason, site, count}, sorted by site
    compiles: list[dict[str, Any]]  # one per frame compile: frame, site, attempt, reason, guard_count
    effective_backend: dict[str, Any] = field(default_factory=dict)  # what `auto` resolved to
    warmup_recompiles: int | None = None  # recompiles seen at the end of warmup; None: this *is* warmup
    # constants whose value differs by rank, as the compile agreement judged them: {site, key, values, count}
    rank_varying: list[dict[str, Any]] = field(default_factory=list)
    # per graph the compile agreement stated, what its compiled code issues (health.issued): {by, digest, collectives}
    issued: list[dict[str, Any]] = field(default_factory=list)
    # per graph the compile agreement stated, what its generated code holds (health.issued.code_summary)
    code: list[dict[str, Any]] = field(default_factory=list)

    @property
    def recompile_reasons(self) -> list[dict[str, Any]]:
        return [{k: c[k] for k in ("frame", "site", "reason")} for c in self.compiles if c["attempt"] > 0]


def metric(judged: str, *, symmetric: bool, default: Any, measure: Callable[[Observations], Any], doc: str) -> Any:
    meta = {"judged": judged, "symmetric": symmetric, "measure": measure, "doc": doc, "type": type(default)}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _collectives(obs: Observations) -> int:
    """Collectives per graph as dispatch sees them (DTensor's too; a graph that cannot be re-traced stops the run,
    health.schedule.ScheduleUnreadable); the dynamo graph's own count for a graph the probe did not observe."""
    after = [len(s["collectives"]) for s in obs.schedules]
    after += [None] * (len(obs.graphs) - len(after))
    return sum(g["collectives"] if n is None else n for g, n in zip(obs.graphs, after, strict=True))


def _schedule_digest(obs: Observations) -> str:
    return "/".join(s["digest"] for s in obs.schedules)


def _rank_varying(obs: Observations) -> dict[str, int]:
    return dict(sorted((c["key"], c.get("count", 1)) for c in obs.rank_varying))


def _steady(obs: Observations) -> list[dict[str, Any]]:
    return [] if obs.warmup_recompiles is None else obs.recompile_reasons[obs.warmup_recompiles :]


@dataclass(frozen=True, kw_only=True)
class CompileHealth:
    # the metric table: one metric per field, how it is judged and measured: the formatter leaves it as written
    # fmt: off
    # -- counted: more is a regression, fewer an improvement (the baseline must then be refreshed)
    graph_breaks: int = metric(COUNTED, symmetric=True, default=0, doc="graph breaks, all reasons",
                               measure=lambda o: sum(o.break_reasons.values()))
    unique_graphs: int = metric(COUNTED, symmetric=True, default=0, doc="graphs dynamo handed the compiler",
                                measure=lambda o: o.graph_count)
    recompiles: int = metric(COUNTED, symmetric=True, default=0, doc="frame compiles with attempt > 0",
                             measure=lambda o: len(o.recompile_reasons))
    steady_recompiles: int = metric(COUNTED, symmetric=False, default=0, doc="recompiles after warmup",
                                    measure=lambda o: len(_steady(o)))
    # -- per reason: a new reason or a higher count is a regression
    break_reasons: dict = metric(REASONS, symmetric=True, default={}, doc="break count per normalised reason",
                                 measure=lambda o: dict(sorted(o.break_reasons.items())))
    # rank-varying constants (a vocab offset, `rank * chunk`): legitimate SPMD code, so listed and baselined; a
    # site the baseline does not have (`scale = 0.5 if rank == 1`) is a regression, judged like break reasons
    rank_varying_constants: dict = metric(REASONS, symmetric=True, default={}, measure=_rank_varying,
                                          doc="constants differing by rank, per site key (file function: op arg)")
    # -- reported: a change is stated; a regression only under --strict
    schedule_digest: str = metric(REPORTED, symmetric=True, default="", doc="digest of each graph's collective"
                                  " schedule (op, group, shape, dtype, reduce op, in order)", measure=_schedule_digest)
    graph_fingerprints: list = metric(REPORTED, symmetric=True, default=[], doc="graph structure hashes (ops, order,"
                                      " wiring; constants and the rank's own device index left out)",
                                      measure=lambda o: [g["fingerprint"] for g in o.graphs])
    # -- issued: per graph, the collectives its compiled code issues, after the compiler's passes (inductor's wrapper;
    # the dispatch schedule for other backends); empty where no agreement ran (a baseline without it: not compared)
    issued_schedules: list = metric(ISSUED, symmetric=True, default=[], measure=lambda o: o.issued,
                                    doc="per graph: by, digest, the issued collectives (op, group, shape, dtype,"
                                        " reduce op, the dispatch collectives each issues)")
    # -- kept: fewer is a regression (a collective that leaves the graph is the compile cliff), more is reported
    collectives_in_graphs: int = metric(KEPT, symmetric=True, default=0, doc="collectives in graphs, after dispatch",
                                        measure=_collectives)
    guard_count: int = metric(REPORTED, symmetric=True, default=0, doc="guards over every frame compile",
                              measure=lambda o: sum(c["guard_count"] for c in o.compiles))
    graph_ops: int = metric(REPORTED, symmetric=False, default=0, doc="call nodes over every graph",
                            measure=lambda o: sum(g["ops"] for g in o.graphs))
    graph_nodes: int = metric(REPORTED, symmetric=False, default=0, doc="FX nodes over every graph (ops + inputs"
                              " + outputs): grows when parameters are lifted to graph inputs",
                              measure=lambda o: sum(g["nodes"] for g in o.graphs))
    effective_backend: dict = metric(REPORTED, symmetric=False, default={}, doc="what `auto` resolved to",
                                     measure=lambda o: o.effective_backend)
    # -- details: in the probe output for the report, never in a baseline
    break_sites: list = metric(DETAIL, symmetric=False, default=[], doc="user file:line of each break",
                               measure=lambda o: o.break_sites)
    frames_compiled: int = metric(DETAIL, symmetric=False, default=0, doc="frame compiles, first ones included",
                                  measure=lambda o: len(o.compiles))
    recompile_reasons: list = metric(DETAIL, symmetric=False, default=[], doc="dynamo's reason per recompile",
                                     measure=lambda o: o.recompile_reasons)
    steady_recompile_reasons: list = metric(DETAIL, symmetric=False, default=[], doc="those after warmup",
                                            measure=_steady)
    graphs: list = metric(DETAIL, symmetric=False, default=[], doc="per-graph fingerprint and op counts",
                          measure=lambda o: o.graphs)
    collective_schedules: list = metric(DETAIL, symmetric=False, default=[], doc="per graph, after dispatch",
                                        measure=lambda o: o.schedules)
    rank_varying_sites: list = metric(DETAIL, symmetric=False, default=[], doc="each rank-varying constant's"
                                      " site and value per rank", measure=lambda o: o.rank_varying)
    generated_code: list = metric(DETAIL, symmetric=False, default=[], doc="per graph: kernels, C++ loops and"
                                  " math calls in the generated code", measure=lambda o: o.code)
    # fmt: on

    @classmethod
    def measure(cls, obs: Observations) -> CompileHealth:
        return cls(**{f.name: f.metadata["measure"](obs) for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fields_judged(*kinds: str) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(CompileHealth) if f.metadata["judged"] in kinds]


BASELINE_KEYS = tuple(f.name for f in fields_judged(COUNTED, REASONS, KEPT, REPORTED, ISSUED))
SYMMETRIC_KEYS = tuple(f.name for f in dataclasses.fields(CompileHealth) if f.metadata["symmetric"])


def default_of(name: str) -> Any:
    f = next(f for f in dataclasses.fields(CompileHealth) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def symmetric_view(health: dict[str, Any]) -> dict[str, Any]:
    """What must be equal across the ranks of a symmetric group after warmup (C-03)."""
    return {key: health[key] for key in SYMMETRIC_KEYS}


def baseline_view(health: CompileHealth) -> dict[str, Any]:
    """The metrics a baseline stores, from a rank's final compile health."""
    return {key: getattr(health, key) for key in BASELINE_KEYS}
