"""The direction policy, as PyTorch's own compile-count CI gate has it.

- counted metrics (breaks, graphs, recompiles): more = regression; fewer = improvement,
  which fails too (the baseline must be refreshed, or it silently rots) unless allowed;
- break reasons: a new reason or a higher count = regression; a reason gone or lower =
  improvement;
- collectives inside graphs: fewer = regression (a collective that leaves the graph is the
  compile cliff), more = reported;
- graph fingerprints, guard counts, op counts, effective backend: changed = reported,
  a regression only under --strict;
- issued schedules, per graph (compile_guard.health.issued.change): point-to-point ops in
  another order or a collective gone = regression; any other change, or a schedule that could not
  be read (`unread`, named with why), = reported (--strict fails it); a baseline that predates them
  compares nothing.
Which metric is which comes from the schema (compile_guard.health.schema).
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from typing import Any

from compile_guard.health import issued, schema

OK, REGRESSION, IMPROVEMENT, CHANGED = "ok", "regression", "improvement", "changed"
NOTHING_COMPILED = "graphs while compile is on"
RANK_VARYING = "rank-varying"  # the label of a rank-varying constant's row: "rank-varying: <file function: op arg>"
_RANK = {OK: 0, CHANGED: 1, IMPROVEMENT: 2, REGRESSION: 3}


@dataclass(frozen=True, kw_only=True)
class Row:
    metric: str
    baseline: Any
    per_rank: list[Any]  # the value on each rank
    verdict: str  # the worst over ranks


def _counted(base: int, value: int) -> str:
    return OK if value == base else REGRESSION if value > base else IMPROVEMENT


def _reasons(base: dict[str, int], value: dict[str, int]) -> str:
    verdicts = {_counted(base.get(k, 0), value.get(k, 0)) for k in set(base) | set(value)}
    return REGRESSION if REGRESSION in verdicts else IMPROVEMENT if IMPROVEMENT in verdicts else OK


# "gb0098: Skip calling ..." (torch 2.8+: dynamo's registry id, then the title) and "Skip calling ..." (2.7: the
# title alone) are one break: compared by title, so a 2.7 baseline checked on 2.8 sees no "new" reason
_REGISTRY_ID = re.compile(r"^gb\d+: ")
# torch 2.6 states a break in one line with the object's repr ("... wrapped function <function f at 0x7f..>"):
# the address differs by rank and by run, the break does not
_ADDRESS = re.compile(r"\s+at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")


def reason_key(reason: str) -> str:
    """A break reason as compared across ranks and torch releases: the first line of dynamo's message (its title
    from 2.7 on), without dynamo's registry id or an object's address."""
    lines = reason.strip().splitlines()
    if not lines:
        return "?"
    return _ADDRESS.sub("", _REGISTRY_ID.sub("", lines[0].strip())).strip()[:300]


def reason_keys(counts: dict[str, int]) -> dict[str, int]:
    """Break-reason counts keyed by `reason_key` (a baseline written with registry ids reads the same)."""
    keyed: dict[str, int] = {}
    for reason, count in counts.items():
        keyed[reason_key(reason)] = keyed.get(reason_key(reason), 0) + count
    return keyed


def reworded(
    base_reasons: dict[str, int], base_sites: list[dict[str, Any]], reasons: dict[str, int], sites: list[dict[str, Any]]
) -> dict[str, str]:
    """Break reasons a torch release only renamed: {run's key: baseline's key}. Titles change across releases
    ("Tensor.item" on 2.7 is "Unsupported Tensor.item() call with capture_scalar_outputs=False" on 2.8; 2.6
    has no titles at all), the user's code does not: a reason new in the run and one gone from the baseline
    are one break when they were hit at the same user sites the same number of times, and only one gone
    reason matches. Only for a baseline of another torch: on one torch a new reason at an old site is a change
    of the program. Sites without a key (baselines written before sites carried one) match nothing."""

    def footprints(keys: set[str], of: list[dict[str, Any]]) -> dict[str, collections.Counter]:
        found: dict[str, collections.Counter] = {}
        for s in of:
            key = reason_key(s.get("key") or "")
            if s.get("key") and key in keys:
                found.setdefault(key, collections.Counter())[s["site"]] += s["count"]
        return found

    base_keys, run_keys = set(reason_keys(base_reasons)), set(reason_keys(reasons))
    gone, new = footprints(base_keys - run_keys, base_sites), footprints(run_keys - base_keys, sites)
    mapping: dict[str, str] = {}
    for key, footprint in sorted(new.items()):
        matches = [b for b, theirs in gone.items() if theirs == footprint]
        if len(matches) == 1 and matches[0] not in mapping.values():
            mapping[key] = matches[0]
    return mapping


def across_releases(
    base_metrics: dict[str, Any],
    base_sites: list[dict[str, Any]],
    per_rank: list[dict[str, Any]],
    per_rank_sites: list[list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """For a baseline of another torch: each rank's metrics with the break reasons that release only renamed
    (`reworded`) keyed as the baseline keys them, and one line per rename for the report."""
    renamed_ranks, notes = [], []
    for metrics, sites in zip(per_rank, per_rank_sites, strict=True):
        mapping = reworded(base_metrics.get("break_reasons", {}), base_sites, metrics.get("break_reasons", {}), sites)
        renamed: dict[str, int] = {}
        for reason, count in reason_keys(metrics.get("break_reasons", {})).items():
            renamed[mapping.get(reason, reason)] = renamed.get(mapping.get(reason, reason), 0) + count
        renamed_ranks.append({**metrics, "break_reasons": renamed})
        notes.extend(
            f"break reason renamed by the torch release: {old!r} now reads {new!r} (the same sites, the"
            " same counts: compared as one)"
            for new, old in mapping.items()
        )
    return renamed_ranks, sorted(set(notes))


def compare(baseline: dict[str, Any], per_rank: list[dict[str, Any]]) -> list[Row]:
    """One row per metric; per-reason rows for break reasons (so a new reason is visible)."""
    rows = []

    def value(metrics: dict[str, Any], name: str) -> Any:
        found = metrics.get(name, schema.default_of(name))
        return reason_keys(found) if name == "break_reasons" else found

    for f in schema.fields_judged(schema.COUNTED):
        values = [value(m, f.name) for m in per_rank]
        verdict = max((_counted(value(baseline, f.name), v) for v in values), key=_RANK.get)
        rows.append(Row(metric=f.name, baseline=value(baseline, f.name), per_rank=values, verdict=verdict))
    for f in schema.fields_judged(schema.REASONS):
        label = {"break_reasons": "break", "rank_varying_constants": RANK_VARYING}.get(f.name, f.name)
        base_counts = value(baseline, f.name)
        for reason in sorted(set(base_counts).union(*(value(m, f.name) for m in per_rank))):
            values = [value(m, f.name).get(reason, 0) for m in per_rank]
            base = base_counts.get(reason, 0)
            verdict = max((_reasons({reason: base}, {reason: v}) for v in values), key=_RANK.get)
            rows.append(Row(metric=f"{label}: {reason}", baseline=base, per_rank=values, verdict=verdict))
    for f in schema.fields_judged(schema.KEPT):
        values = [value(m, f.name) for m in per_rank]
        base = value(baseline, f.name)
        verdict = REGRESSION if any(v < base for v in values) else OK if all(v == base for v in values) else CHANGED
        rows.append(Row(metric=f.name, baseline=base, per_rank=values, verdict=verdict))
    for f in schema.fields_judged(schema.REPORTED):
        values = [value(m, f.name) for m in per_rank]
        verdict = OK if all(v == value(baseline, f.name) for v in values) else CHANGED
        rows.append(Row(metric=f.name, baseline=value(baseline, f.name), per_rank=values, verdict=verdict))
    for f in schema.fields_judged(schema.ISSUED):
        rows += _issued_rows(f.name, value(baseline, f.name), [value(m, f.name) for m in per_rank])
    return rows


def _issued_rows(name: str, base: list[dict[str, Any]], per_rank: list[list[dict[str, Any]]]) -> list[Row]:
    """One row per graph whose issued schedule moved (the first move named), or one row saying none did."""
    if not base:  # a baseline that predates the metric (or a run without the agreement): nothing to compare
        return [Row(metric=f"{name} (not in baseline)", baseline="-", per_rank=[len(v) for v in per_rank], verdict=OK)]
    rows = []
    for i in range(max(len(base), *(len(v) for v in per_rank))):
        theirs = [v[i] if i < len(v) else {} for v in per_rank]
        mine = base[i] if i < len(base) else {}
        moved = [issued.change(mine, t) for t in theirs]
        verdict = (
            REGRESSION
            if any(k == REGRESSION for k, _ in moved)
            else OK
            if all(k == "same" for k, _ in moved)
            else CHANGED
        )
        unread = {t.get("why", "not read") for t in theirs if t.get("by") == "unread"}
        if verdict == OK and unread:  # unread on both sides is no proof of "same": named, fails --strict
            verdict, moved = CHANGED, [("changed", f"unread ({'; '.join(sorted(unread))})")]
        if verdict != OK:
            what = next(w for k, w in moved if k != "same")
            rows.append(
                Row(
                    metric=f"issued: graph #{i}: {what}",
                    baseline=mine.get("digest"),
                    per_rank=[t.get("digest") for t in theirs],
                    verdict=verdict,
                )
            )
    digests = ["/".join(g.get("digest", "?") for g in v) for v in per_rank]
    return rows or [
        Row(metric=name, baseline="/".join(g.get("digest", "?") for g in base), per_rank=digests, verdict=OK)
    ]


def nothing_compiled(per_rank: list[dict[str, Any]], *, compile_on: bool) -> list[Row]:
    """Compile is on, yet a rank made no graph: a regression whatever a baseline says (a baseline
    recorded while compile was broken holds zeros too, and must never gate anything)."""
    values = [m.get("unique_graphs", 0) for m in per_rank]
    if not compile_on or all(v > 0 for v in values):
        return []
    return [Row(metric=NOTHING_COMPILED, baseline="> 0", per_rank=values, verdict=REGRESSION)]


def failing(rows: list[Row], *, allow_improvement: bool, strict: bool) -> list[Row]:
    """The rows that fail the gate under these flags."""
    fails = {REGRESSION} | ({IMPROVEMENT} if not allow_improvement else set()) | ({CHANGED} if strict else set())
    return [r for r in rows if r.verdict in fails]


def outcome(rows: list[Row], *, allow_improvement: bool, strict: bool) -> tuple[bool, list[str]]:
    """(passed, reasons it did not)."""
    notes = {REGRESSION: "regression", IMPROVEMENT: "improvement: refresh the baseline", CHANGED: "changed, --strict"}
    problems = [
        f"{r.metric}: {r.baseline} -> {r.per_rank} ({notes[r.verdict]})"
        for r in failing(rows, allow_improvement=allow_improvement, strict=strict)
    ]
    return not problems, problems


@dataclass(frozen=True, kw_only=True)
class Gate:
    health: list[Row]  # the compile-health rows (and "nothing compiled" when compile did not happen)
    renames: list[str]  # break reasons another torch only renamed, as notes
    passed: bool  # no row (the health rows and the others given) fails under the flags
    problems: list[str]  # a line per failing row
    failing: list[str]  # the failing rows' metrics


def gate(
    base_metrics: dict[str, Any],
    base_sites: list[dict[str, Any]],
    per_rank: list[dict[str, Any]],
    per_rank_sites: list[list[dict[str, Any]]],
    *,
    others: list[Row],
    other_release: bool,
    compile_on: bool,
    allow_improvement: bool,
    strict: bool,
) -> Gate:
    """A run's compile health against its baseline, and the verdict of every row under the flags: each metric
    (`compare`; for a baseline of `other_release`, the break reasons that release only renamed read as the
    baseline's, `across_releases`) and `nothing_compiled`, then `outcome` over them and the `others` (the quality
    rows, compile_guard.quality.rows)."""
    renames: list[str] = []
    if other_release:
        per_rank, renames = across_releases(base_metrics, base_sites, per_rank, per_rank_sites)
    health = compare(base_metrics, per_rank) + nothing_compiled(per_rank, compile_on=compile_on)
    rows = health + others
    passed, problems = outcome(rows, allow_improvement=allow_improvement, strict=strict)
    fails = failing(rows, allow_improvement=allow_improvement, strict=strict)
    return Gate(health=health, renames=renames, passed=passed, problems=problems, failing=[r.metric for r in fails])
