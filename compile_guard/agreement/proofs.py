"""What a hold proves on its own, and the words for it: a peer ran another graph at my call (rule 2), a wait-for
cycle (rule 7), a parent call split elsewhere (rule 8), an issued schedule that differs (rule 9), a ledger
entry that differs or never comes, a stall (rule 5). Each returns the verdict the hold declares.

Pure data in, data out (no torch, no store), like compile_guard.agreement.compare, whose words it reuses; the
holds (compile_guard.agreement.holds) and the stall report (compile_guard.agreement.protocol) call it.
"""

from __future__ import annotations

import json
from typing import Any

from tabulate import tabulate

from compile_guard.agreement.compare import (
    breaks_text,
    describe,
    first_difference,
    first_differing_collective,
    header,
    settings_rows,
    split_sites,
    streams_part,
    table,
)
from compile_guard.agreement.entries import Statement, Verdict
from compile_guard.agreement.messages import HeldEntry, HeldGraph, parse_holding
from compile_guard.health.issued import describe as describe_issued


def other_graph(
    group: str, ranks: list[int], mine: Statement, peer: int, theirs: Statement | None, ran: str | None
) -> Verdict:
    """The verdict when `peer` made the call `mine` was compiled at, running another graph (or none we know)."""
    if theirs is not None:
        ran_text = f"its graph #{theirs.n} (compile id {theirs.compile_id}, compiled at call {theirs.call})"
    else:
        ran_text = f"a graph older than its history ({ran})"
    lines = [
        header(group, ranks, mine),
        f"  {describe(mine)}",
        f"  rank {peer} made call {mine.call} of this frame without compiling: it ran {ran_text}",
    ]
    first = None
    if theirs is not None:
        pair = sorted([mine, theirs], key=lambda s: s.rank)
        first = first_differing_collective(pair)
        lines += [table(pair), f"first differing collective: {first or '(schedules agree)'}"]
    lines += ["graph breaks since the previous graph:", breaks_text([mine])]
    return Verdict(
        error="CompileDivergence",
        kind="other_graph",
        fields=["graph"],
        ranks=[mine.rank],
        absent=[peer],
        slot=mine.slot,
        first_collective=first,
        text="\n".join(lines),
    )


def _held(rank: int, s: Statement | HeldGraph, by: int) -> str:
    """One rank of a cycle: its statement of the graph it holds, or (unread) what its position said it holds."""
    return (
        f"  rank {rank} holds graph #{s.n} of frame '{s.frame.name}' ({s.frame.site}) at call {s.call}: rank {by}"
        " never compiled it there"
    )


def cycle(
    group: str,
    ranks: list[int],
    mine: Statement,
    peer: int,
    theirs: Statement | None,
    held: HeldGraph,
    streams: dict[int, list[dict[str, Any]]] | None,
) -> Verdict:
    """The verdict of a wait-for cycle (compile_guard.agreement.protocol, rule 7): I hold `mine`, `peer` holds
    `held` (its statement `theirs`), each waits for the other's statement, which can never come."""
    pair = sorted([mine, *([theirs] if theirs else [])], key=lambda s: s.rank)
    lines = [
        f"compile divergence in group {group} (ranks {ranks}): the ranks took different paths; each holds a graph"
        " the other never compiled at that call, so no rank can go on (a wait-for cycle); stopped before either"
        " graph's first run",
        _held(mine.rank, mine, peer),
        _held(peer, theirs or held, mine.rank),
        *(f"  {describe(s)}" for s in pair),
    ]
    first = None
    if streams is not None:
        parted = streams_part(streams)
        counts = ", ".join(f"rank{r} {len(c)}" for r, c in sorted(streams.items()))
        first = parted[1] if parted else None
        lines.append(
            f"collective streams within the parent call part at {first}"
            if parted
            else f"collective streams within the parent call line up so far ({counts} collectives): each rank"
            " broke the frame somewhere else"
        )
    lines += ["graph breaks that put each rank on its path (since its previous graph):", breaks_text(pair)]
    return Verdict(
        error="CompileDivergence",
        kind="cycle",
        fields=["path"],
        ranks=sorted([mine.rank, peer]),
        slot=mine.slot,
        held={str(mine.rank): mine.slot, str(peer): held.slot},
        first_collective=first,
        text="\n".join(lines),
    )


def split_elsewhere(
    group: str,
    ranks: list[int],
    mine: Statement,
    own: Statement,
    theirs: Statement,
    streams: dict[int, list[dict[str, Any]]],
) -> Verdict:
    """The verdict when a peer split the parent call of my graph at other breaks than mine (protocol rule 8): it
    goes on in a resume function of its own and never runs mine in that call. `own`/`theirs`: the parent graphs."""
    peer, parent = theirs.rank, mine.parent
    assert parent is not None, "rule 8 holds only a graph that runs inside a parent call"
    parted = streams_part(streams)
    counts = ", ".join(f"rank{r} {len(c)}" for r, c in sorted(streams.items()))
    lines = [
        f"compile divergence in group {group} (ranks {ranks}): the ranks broke frame '{parent.name}' call"
        f" {parent.call} at different places, so rank {peer} never runs graph #{mine.n} of frame"
        f" '{mine.frame.name}' in that call (the ranks took different paths); stopped before its first run",
        f"  rank {mine.rank} broke it at {', '.join(split_sites(own)) or '?'}; rank {peer} at"
        f" {', '.join(split_sites(theirs)) or '?'}",
        f"  {describe(mine)}",
        f"collective streams within the call part at {parted[1]}"
        if parted
        else f"collective streams within the call line up so far ({counts} collectives; rank {peer}'s next graph not"
        " compiled yet)",
        "graph breaks (since each rank's previous graph):",
        breaks_text(sorted([own, theirs], key=lambda s: s.rank)),
    ]
    return Verdict(
        error="CompileDivergence",
        kind="split",
        fields=["path"],
        ranks=sorted([mine.rank, peer]),
        slot=mine.slot,
        first_collective=parted[1] if parted else None,
        text="\n".join(lines),
    )


def issued_mismatch(
    group: str,
    ranks: list[int],
    statements: list[Statement],
    issued: dict[int, dict[str, Any]],
    *,
    asymmetric: bool = False,
) -> Verdict | None:
    """The verdict when the ranks' issued schedules of one slot differ (compile_guard.agreement.protocol, rule 9):
    the graphs agreed, the compiled code would issue other collectives. None when they agree, or when a rank's
    could not be read (a C++ wrapper: `unread`, said in its statement, never compared as empty). `asymmetric`: the
    graphs differ by an accepted rank-only break, so the issued streams need only line up (one the start of the
    other), as the dispatch schedules did."""
    if any(i.get("by") == "unread" for i in issued.values()):
        return None
    digests = {r: i.get("digest") for r, i in issued.items()}
    if len(set(digests.values())) == 1:
        return None
    streams = {
        r: [{k: v for k, v in c.items() if k != "merged"} for c in i.get("collectives") or []]
        for r, i in sorted(issued.items())
    }
    if asymmetric and any(i.get("cut") for i in issued.values()):
        return None  # lists cut: nothing to line up; the streams were judged on the dispatch schedules
    found = first_difference(streams, ended_differs=not asymmetric)
    if found is None and asymmetric:
        return None
    first = None
    if found is not None:
        at = found[0]
        nth = {r: (i.get("collectives") or [])[at : at + 1] for r, i in issued.items()}  # [] past its end
        dispatch = statements[0].collectives
        first = f"#{at}: " + " | ".join(
            f"rank{r} {describe_issued(nth[r][0] if nth[r] else None, dispatch)}" for r in sorted(nth)
        )
    settings = settings_rows(statements)
    lines = [
        header(group, ranks, statements[0]).replace(
            "stopped before", "the compiled code issues other collectives on each rank; stopped before"
        ),
        "  the graphs agree (structure, dispatch schedule, settings); what differs was decided after them, by"
        " the compiler's passes (bucketing, reordering, overlap scheduling, estimates that differ by rank)",
        *(
            f"  rank {r}: {i.get('by')} issues {i.get('total')} collectives (digest {i.get('digest')})"
            for r, i in sorted(issued.items())
        ),
        f"first differing issued collective: {first or '(the schedules were cut; their digests differ)'}",
        "settings that differ: "
        + (
            "(none)"
            if not settings
            else tabulate(settings, headers=["setting", *(f"rank{s.rank}" for s in statements)], disable_numparse=True)
        ),
    ]
    return Verdict(
        error="CompileDivergence",
        kind="issued",
        fields=["issued_schedule"],
        ranks=sorted(issued),
        slot=statements[0].slot,
        first_collective=first,
        text="\n".join(lines),
    )


def ledger_mismatch(name: str, n: int, entries: list[dict[str, Any]]) -> Verdict | None:
    """The verdict when the ranks' entry n of a ledger group differ (op, group, arguments); None if alike."""
    issued = [{k: v for k, v in e.items() if k not in ("rank", "site")} for e in entries]
    if all(e == issued[0] for e in issued):
        return None
    lines = [f"eager collective #{n} on group {name} differs across ranks; stopped before the call"]
    lines += [
        f"  rank{e['rank']}: {e['op']} {json.dumps(e.get('args'), sort_keys=True)} at {e.get('site')}" for e in entries
    ]
    return Verdict(
        error="CollectiveMismatch",
        kind="mismatch",
        entry=n,
        fields=["entry"],
        first_collective="\n".join(lines[1:]),  # each rank's entry, a line each
        text="\n".join(lines),
    )


def ledger_ended(name: str, n: int, mine: dict[str, Any], peer: int, final: dict[str, Any]) -> Verdict:
    """The verdict when a peer left the ledger before issuing entry n: it never will."""
    issued = (final.get("entries") or {}).get(name, 0)
    text = (
        f"eager collective #{n} on group {name}: rank {peer} left after {issued} entries; stopped before the call\n"
        f"  rank{mine['rank']}: {mine['op']} {json.dumps(mine.get('args'), sort_keys=True)} at {mine.get('site')}"
    )
    return Verdict(error="CollectiveMismatch", kind="ended", entry=n, fields=["entry"], text=text)


def _state(report: dict[str, Any] | None, now: float) -> str:
    if report is None:
        return "no answer (stopped, or wedged outside Python)"
    busy = report.get("busy")
    if busy:
        return f"compiling {busy}"
    try:
        holding = parse_holding(report.get("holding"))
    except (KeyError, TypeError, ValueError):  # a row from another version: say so rather than guess
        return f"holds what this version cannot read: {str(report.get('holding'))[:40]}"
    if holding is None:
        return "running (holds nothing)"
    waited = f"{now - holding.since:.1f}s"
    if isinstance(holding, HeldEntry):
        return f"holds eager #{holding.entry} {holding.op} on {holding.group} ({waited})"
    return f"holds graph #{holding.n} '{holding.frame.name}' call {holding.call} ({waited})"


def stall_text(
    group: str, ranks: list[int], reports: dict[int, dict[str, Any]], *, what: str, quiet_s: float, now: float
) -> str:
    """The stall report: one row per rank of the group, its position and its main thread's innermost lines."""
    rows = []
    for r in ranks:
        report = reports.get(r)
        frames = (report or {}).get("frames") or {}
        calls = ", ".join(f"{f['name']} x{f['calls']}" for f in frames.values()) or "-"
        entries = ", ".join(f"{g}:{k}" for g, k in ((report or {}).get("entries") or {}).items()) or "-"
        stack = " < ".join((report or {}).get("stack") or []) or "-"
        rows.append([r, _state(report, now), calls[:40], entries[:24], stack[:110]])
    head = (
        f"stall in group {group} (ranks {ranks}): no progress for {quiet_s:.1f}s while waiting for {what};"
        " no proof of a divergence: every rank stops, before the group's own timeout would have ended it"
    )
    return (
        head
        + "\n"
        + tabulate(rows, headers=["rank", "state", "compiled calls", "ledger", "main thread"], disable_numparse=True)
    )
