"""What the ranks' statements of one slot say: agreed, divergent, or an asymmetry; and the words for it.

Pure data in, data out (no torch, no store): the protocol (compile_guard.agreement.protocol) calls
`compare` once every peer's statement of a slot is in, and the simulation test calls it too.

- **Must agree** (AGREED, named by the statement's own field metadata: compile_guard.agreement.entries):
  the frame, the graph's *structure* (ops, order, wiring: compile_guard.health.structure), its
  collective schedule (op, group and ranks, shape, dtype, reduce op, order) and the compile
  settings. A difference is a divergence: every rank stops.
- **May differ**: the constants in the graph (rank-derived offsets, sizes). Each site whose value
  differs is listed with the value per rank; it stops nothing unless `strict_constants`.
- **An asymmetry**: the ranks broke the frame at different places (a print or warning on one rank
  only). The graphs differ, but what can hang a job is the *stream* of collectives each rank
  issues: when one rank's collectives are the start of the other's, the streams still line up
  (the rest follows in the rank's next graph). Reported; a stop only with `stop_on_asymmetry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tabulate import tabulate

from compile_guard.agreement.entries import AGREED, SHOWN, Statement, Verdict
from compile_guard.health.issued import compared

SiteOf = Callable[[int, str], dict[str, str]]  # (node index, argument path) -> {"site", "key"} on this rank


@dataclass(frozen=True, kw_only=True)
class Options:
    strict_constants: bool = False  # a rank-varying constant is a divergence (default: listed, not stopped)
    stop_on_asymmetry: bool = False  # a rank-only graph break stops even when the streams line up


@dataclass(frozen=True, kw_only=True)
class Comparison:
    verdict: Verdict | None  # a divergence to declare, or None
    rank_varying: list[dict[str, Any]] = field(default_factory=list)  # {site, key, values: {rank: value}}
    asymmetry: str | None = None  # the report of an accepted asymmetry


def _issued(c: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if c is None else compared(c)


def collective(c: dict[str, Any] | None) -> str:
    if c is None:
        return "(none)"
    group = c.get("group") or {}
    return (
        f"{c.get('op')} {group.get('name')}{group.get('ranks') or ''} {c.get('shape')} {c.get('dtype')}"
        f"{' ' + c['reduce_op'] if c.get('reduce_op') else ''} at {c.get('site') or '?'}"
    )


def first_difference(streams: dict[int, list[dict[str, Any]]], *, ended_differs: bool) -> tuple[int, str] | None:
    """(position, '#i: rank0 <op group shape dtype at site> | rank1 ...') where the ranks' collectives first
    differ; a stream that has ended differs there only when `ended_differs`."""
    for i in range(max((len(s) for s in streams.values()), default=0)):
        entries = {r: s[i] if i < len(s) else None for r, s in streams.items()}
        compared = [_issued(e) for e in entries.values() if ended_differs or e is not None]
        if any(e != compared[0] for e in compared):
            return i, f"#{i}: " + " | ".join(f"rank{r} {collective(e)}" for r, e in sorted(entries.items()))
    return None


def streams_part(streams: dict[int, list[dict[str, Any]]]) -> tuple[int, str] | None:
    """Where the ranks' collective streams part; None while every stream is the start of the longest one (they
    line up so far: nothing issued so far can hang)."""
    return first_difference(streams, ended_differs=False)


def first_differing_collective(statements: list[Statement]) -> str | None:
    """The first position where the statements' schedules differ (a shorter schedule differs where it ends)."""
    found = first_difference(_streams(statements), ended_differs=True)
    return None if found is None else found[1]


def differing(statements: list[Statement]) -> list[str]:
    """The agreed fields (entries.AGREED) whose values are not the same in every statement."""
    return [k for k in AGREED if any(getattr(s, k) != getattr(statements[0], k) for s in statements)]


def _breaks(s: Statement) -> frozenset[tuple[str, str]]:
    return frozenset((b.reason, b.site) for b in s.breaks)


def rank_varying(statements: list[Statement], site_of: SiteOf) -> list[dict[str, Any]]:
    """The constants whose value differs across ranks (statements of one structure: same places)."""
    if all(s.constants_digest == statements[0].constants_digest for s in statements):
        return []
    lists = [s.constants for s in statements]
    found = []
    for i in range(min(len(c) for c in lists)):
        values = {s.rank: c[i][2] for s, c in zip(statements, lists, strict=True)}
        if len(set(map(repr, values.values()))) > 1:
            node, path = lists[0][i][0], lists[0][i][1]
            found.append({**site_of(node, path), "values": {str(r): v for r, v in sorted(values.items())}})
    if not found:  # the digests differ beyond the part each statement carries (compile_guard.agreement.statement)
        found.append({"site": "?", "key": "constants beyond the statement's limit", "values": {}})
    return found


def describe(s: Statement) -> str:
    why = s.recompile_reason or ("graph break" if s.breaks else "first compile")
    return (
        f"rank {s.rank} compiled graph #{s.n} of frame '{s.frame.name}' ({s.frame.site})"
        f" at call {s.call}, compile id {s.compile_id}, because: {why}"
    )


def breaks_text(statements: list[Statement]) -> str:
    lines = [f"  rank{s.rank}: {b.reason} at {b.site} x{b.count}  | {b.source}" for s in statements for b in s.breaks]
    return "\n".join(lines) or "  (none on any rank)"


def settings_rows(statements: list[Statement]) -> list[list[Any]]:
    keys = sorted(set().union(*(s.settings for s in statements)))
    values = [[s.settings.get(k, "<default>") for s in statements] for k in keys]
    return [[f"settings.{k}", *v] for k, v in zip(keys, values, strict=True) if any(x != v[0] for x in v)]


def table(statements: list[Statement]) -> str:
    """field | rank... for every field of the statements that tells the ranks apart (entries.SHOWN), each as on
    the wire; then the settings that differ, one row each."""
    rows = [
        [k, *(str(s.wire(k))[:48] for s in statements)]
        for k in SHOWN
        if any(getattr(s, k) != getattr(statements[0], k) for s in statements)
    ]
    rows += settings_rows(statements)
    return tabulate(rows, headers=["field", *(f"rank{s.rank}" for s in statements)], disable_numparse=True)


def constants_text(found: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {c['site']} ({c['key']}): " + ", ".join(f"rank{r}={v}" for r, v in c["values"].items()) for c in found
    )


def header(group: str, ranks: list[int], s: Statement) -> str:
    return (
        f"compile divergence in group {group} (ranks {ranks}) at frame '{s.frame.name}' call {s.call}"
        f" (graph #{s.n} on rank {s.rank}), stopped before the graph's first run (none of its"
        " collectives ran)"
    )


def _streams(statements: list[Statement]) -> dict[int, list[dict[str, Any]]]:
    return {s.rank: s.collectives for s in statements}


def asymmetry_text(group: str, statements: list[Statement], parted: tuple[int, str] | None) -> str:
    broke = [s.rank for s in statements if s.breaks]
    first = statements[0]
    lines = [
        f"compile asymmetry in group {group} at frame '{first.frame.name}' ({first.frame.site}) call"
        f" {first.call}: a graph break on rank(s) {broke} only",
        breaks_text(statements),
    ]
    counts = ", ".join(f"rank{r} {len(c)}" for r, c in _streams(statements).items())
    if parted is None:
        lines.append(
            f"collective streams line up so far ({counts} collectives; each a start of the longest): the"
            " rest follows in the breaking rank's next graph, so nothing issued can hang"
        )
    else:
        lines.append(f"collective streams part at {parted[1]}")
    return "\n".join(lines)


def compare(statements: list[Statement], *, group: str, site_of: SiteOf, options: Options) -> Comparison:
    """Every rank's statement of one slot (sorted by rank), judged."""
    ranks = [s.rank for s in statements]
    fields = differing(statements)
    varying = rank_varying(statements, site_of) if "fingerprint" not in fields else []
    if any(_breaks(s) != _breaks(statements[0]) for s in statements) and not {"settings", "settings_digest"} & set(
        fields
    ):
        parted = streams_part(_streams(statements))
        text = asymmetry_text(group, statements, parted)
        if parted is None and not options.stop_on_asymmetry:
            return Comparison(verdict=None, rank_varying=varying, asymmetry=text)
        kind = "asymmetry" if parted is None else "mismatch"
        head = (
            header(group, ranks, statements[0])
            if parted
            else f"{text.splitlines()[0]}: stopped before the"
            " graph's first run, as asked (stop_on_asymmetry; check stops every asymmetry)"
        )
        body = text if parted else "\n".join(text.splitlines()[1:])
        return Comparison(
            verdict=Verdict(
                error="CompileDivergence",
                kind=kind,
                fields=fields or ["breaks"],
                ranks=ranks,
                slot=statements[0].slot,
                first_collective=parted[1] if parted else None,
                text=f"{head}\n{body}\n{table(statements)}",
            )
        )
    if varying and options.strict_constants:
        fields = [*fields, "constants"]
    if not fields:
        return Comparison(verdict=None, rank_varying=varying)
    first = first_differing_collective(statements)
    text = "\n".join(
        [
            header(group, ranks, statements[0]),
            *(f"  {describe(s)}" for s in statements),
            f"differs: {fields}",
            table(statements),
            f"first differing collective: {first or '(schedules agree)'}",
            "graph breaks since the previous graph:",
            breaks_text(statements),
        ]
    )
    if varying:
        text += "\nrank-varying constants:\n" + constants_text(varying)
    return Comparison(
        verdict=Verdict(
            error="CompileDivergence",
            kind="mismatch",
            fields=fields,
            ranks=ranks,
            slot=statements[0].slot,
            first_collective=first,
            text=text,
        ),
        rank_varying=varying,
    )


def split_sites(s: Statement) -> list[str]:
    """The sites of the breaks that split a statement's graph (one without the field: every break since the previous
    graph, as before the field existed); empty: the graph is its frame's whole call."""
    return s.split if s.split is not None else [b.site for b in s.breaks]
