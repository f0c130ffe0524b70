"""What the ranks' statements of one slot say: agreed, divergent, or an asymmetry; and the words for it.

Pure data in, data out (no torch, no store): the protocol (compile_guard.agreement.protocol) calls
`judge` once every peer's statement of a slot is in, and the simulation test calls it too.

- **Must agree** (AGREED): the frame, the graph's *structure* (ops, order, wiring:
  compile_guard.health.structure), its collective schedule (op, group and ranks, shape, dtype,
  reduce op, order) and the compile settings. A difference is a divergence: every rank stops.
- **May differ**: the constants in the graph (rank-derived offsets, sizes). Each site whose value
  differs is listed with the value per rank; it stops nothing unless `strict_constants`.
- **An asymmetry**: the ranks broke the frame at different places (a print or warning on one rank
  only). The graphs differ, but what can hang a job is the *stream* of collectives each rank
  issues: when one rank's collectives are the start of the other's, the streams still line up
  (the rest follows in the rank's next graph). Reported; a stop only with `stop_on_asymmetry`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from tabulate import tabulate

from compile_guard.health.issued import compared
from compile_guard.health.issued import describe as describe_issued

# must be equal on every rank; "settings" holds the settings a rank changed from torch's defaults (by name), the
# digest covers every compared one (compile_guard.health.settings)
AGREED = ("frame", "fingerprint", "schedule_digest", "settings", "settings_digest")
SiteOf = Callable[[int, str], dict[str, str]]  # (node index, argument path) -> {"site", "key"} on this rank


@dataclass(frozen=True, kw_only=True)
class Options:
    strict_constants: bool = False  # a rank-varying constant is a divergence (default: listed, not stopped)
    stop_on_asymmetry: bool = False  # a rank-only graph break stops even when the streams line up


@dataclass(frozen=True, kw_only=True)
class Judgement:
    verdict: dict[str, Any] | None  # a divergence to declare, or None
    rank_varying: list[dict[str, Any]] = field(default_factory=list)  # {site, key, values: {rank: value}}
    asymmetry: str | None = None  # the report of an accepted asymmetry


def _issued(c: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if c is None else compared(c)


def collective(c: dict[str, Any] | None) -> str:
    if c is None:
        return "(none)"
    group = c.get("group") or {}
    return (f"{c.get('op')} {group.get('name')}{group.get('ranks') or ''} {c.get('shape')} {c.get('dtype')}"
            f"{' ' + c['reduce_op'] if c.get('reduce_op') else ''} at {c.get('site') or '?'}")  # fmt: skip


def _first_difference(streams: dict[int, list[dict[str, Any]]], *, ended_differs: bool) -> tuple[int, str] | None:
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
    return _first_difference(streams, ended_differs=False)


def first_differing_collective(statements: list[dict[str, Any]]) -> str | None:
    """The first position where the statements' schedules differ (a shorter schedule differs where it ends)."""
    found = _first_difference({s["rank"]: s.get("collectives") or [] for s in statements}, ended_differs=True)
    return None if found is None else found[1]


def differing(statements: list[dict[str, Any]]) -> list[str]:
    """The agreed fields whose values are not the same in every statement."""
    return [k for k in AGREED if any(s.get(k) != statements[0].get(k) for s in statements)]


def _breaks(s: dict[str, Any]) -> frozenset[tuple[str, str]]:
    return frozenset((b["reason"], b["site"]) for b in s.get("breaks", []))


def rank_varying(statements: list[dict[str, Any]], site_of: SiteOf) -> list[dict[str, Any]]:
    """The constants whose value differs across ranks (statements of one structure: same places)."""
    if all(s.get("constants_digest") == statements[0].get("constants_digest") for s in statements):
        return []
    lists = [s.get("constants") or [] for s in statements]
    found = []
    for i in range(min(len(c) for c in lists)):
        values = {s["rank"]: c[i][2] for s, c in zip(statements, lists, strict=True)}
        if len(set(map(repr, values.values()))) > 1:
            node, path = lists[0][i][0], lists[0][i][1]
            found.append({**site_of(node, path), "values": {str(r): v for r, v in sorted(values.items())}})
    if not found:  # the digests differ beyond the part each statement carries (compile_guard.agreement.statement)
        found.append({"site": "?", "key": "constants beyond the statement's limit", "values": {}})
    return found


def describe(s: dict[str, Any]) -> str:
    why = s.get("recompile_reason") or ("graph break" if s.get("breaks") else "first compile")
    return (f"rank {s['rank']} compiled graph #{s.get('n')} of frame '{s['frame']['name']}' ({s['frame']['site']})"
            f" at call {s.get('call')}, compile id {s.get('compile_id')}, because: {why}")  # fmt: skip


def breaks_text(statements: list[dict[str, Any]]) -> str:
    lines = [f"  rank{s['rank']}: {b['reason']} at {b['site']} x{b['count']}  | {b['source']}"
             for s in statements for b in s.get("breaks", [])]  # fmt: skip
    return "\n".join(lines) or "  (none on any rank)"


def _settings_rows(statements: list[dict[str, Any]]) -> list[list[Any]]:
    keys = sorted(set().union(*(s.get("settings", {}) for s in statements)))
    values = [[s.get("settings", {}).get(k, "<default>") for s in statements] for k in keys]
    return [[f"settings.{k}", *v] for k, v in zip(keys, values, strict=True) if any(x != v[0] for x in v)]


def table(statements: list[dict[str, Any]]) -> str:
    """field | rank... for every field of the statements that tells the ranks apart."""
    rows = [[k, *(str(s.get(k))[:48] for s in statements)] for k in ("frame", "compile_id", "recompile_reason",
            "fingerprint", "schedule_digest", "collectives_total", "constants_digest", "settings_digest")
            if any(s.get(k) != statements[0].get(k) for s in statements)]  # fmt: skip
    rows += _settings_rows(statements)
    return tabulate(rows, headers=["field", *(f"rank{s['rank']}" for s in statements)], disable_numparse=True)


def constants_text(found: list[dict[str, Any]]) -> str:
    return "\n".join(f"  {c['site']} ({c['key']}): " + ", ".join(f"rank{r}={v}" for r, v in c["values"].items())
                     for c in found)  # fmt: skip


def header(group: str, ranks: list[int], s: dict[str, Any]) -> str:
    return (f"compile divergence in group {group} (ranks {ranks}) at frame '{s['frame']['name']}' call {s.get('call')}"
            f" (graph #{s.get('n')} on rank {s['rank']}), stopped before the graph's first run (none of its"
            " collectives ran)")  # fmt: skip


def _streams(statements: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    return {s["rank"]: s.get("collectives") or [] for s in statements}


def asymmetry_text(group: str, statements: list[dict[str, Any]], parted: tuple[int, str] | None) -> str:
    broke = [s["rank"] for s in statements if s.get("breaks")]
    first = statements[0]
    lines = [f"compile asymmetry in group {group} at frame '{first['frame']['name']}' ({first['frame']['site']}) call"
             f" {first.get('call')}: a graph break on rank(s) {broke} only", breaks_text(statements)]  # fmt: skip
    counts = ", ".join(f"rank{r} {len(c)}" for r, c in _streams(statements).items())
    if parted is None:
        lines.append(f"collective streams line up so far ({counts} collectives; each a start of the longest): the"
                     " rest follows in the breaking rank's next graph, so nothing issued can hang")  # fmt: skip
    else:
        lines.append(f"collective streams part at {parted[1]}")
    return "\n".join(lines)


def judge(statements: list[dict[str, Any]], *, group: str, site_of: SiteOf, options: Options) -> Judgement:
    """Every rank's statement of one slot (sorted by rank), judged."""
    ranks = [s["rank"] for s in statements]
    fields = differing(statements)
    varying = rank_varying(statements, site_of) if "fingerprint" not in fields else []
    if any(_breaks(s) != _breaks(statements[0]) for s in statements) and not {"settings", "settings_digest"} & set(
            fields):  # fmt: skip
        parted = streams_part(_streams(statements))
        text = asymmetry_text(group, statements, parted)
        if parted is None and not options.stop_on_asymmetry:
            return Judgement(verdict=None, rank_varying=varying, asymmetry=text)
        kind = "asymmetry" if parted is None else "mismatch"
        head = (header(group, ranks, statements[0]) if parted else f"{text.splitlines()[0]}: stopped before the"
                " graph's first run, as asked (stop_on_asymmetry; check stops every asymmetry)")  # fmt: skip
        body = text if parted else "\n".join(text.splitlines()[1:])
        return Judgement(verdict={"error": "CompileDivergence", "kind": kind, "fields": fields or ["breaks"],
                                  "ranks": ranks, "slot": statements[0].get("slot"), "first_collective":
                                  parted[1] if parted else None, "text": f"{head}\n{body}\n{table(statements)}"})
    if varying and options.strict_constants:
        fields = [*fields, "constants"]
    if not fields:
        return Judgement(verdict=None, rank_varying=varying)
    first = first_differing_collective(statements)
    text = "\n".join([header(group, ranks, statements[0]), *(f"  {describe(s)}" for s in statements),
                      f"differs: {fields}", table(statements),
                      f"first differing collective: {first or '(schedules agree)'}",
                      "graph breaks since the previous graph:", breaks_text(statements)])  # fmt: skip
    if varying:
        text += "\nrank-varying constants:\n" + constants_text(varying)
    return Judgement(verdict={"error": "CompileDivergence", "kind": "mismatch", "fields": fields, "ranks": ranks,
                              "slot": statements[0].get("slot"), "first_collective": first, "text": text},
                     rank_varying=varying)  # fmt: skip


def other_graph(group: str, ranks: list[int], mine: dict[str, Any], peer: int, theirs: dict[str, Any] | None,
                ran: str | None) -> dict[str, Any]:  # fmt: skip
    """The verdict when `peer` made the call `mine` was compiled at, running another graph (or none we know)."""
    if theirs is not None:
        ran_text = (f"its graph #{theirs.get('n')} (compile id {theirs.get('compile_id')}, compiled at call"
                    f" {theirs.get('call')})")  # fmt: skip
    else:
        ran_text = f"a graph older than its history ({ran})"
    lines = [header(group, ranks, mine), f"  {describe(mine)}",
             f"  rank {peer} made call {mine.get('call')} of this frame without compiling: it ran {ran_text}"]
    first = None
    if theirs is not None:
        pair = sorted([mine, theirs], key=lambda s: s["rank"])
        first = first_differing_collective(pair)
        lines += [table(pair), f"first differing collective: {first or '(schedules agree)'}"]
    lines += ["graph breaks since the previous graph:", breaks_text([mine])]
    return {"error": "CompileDivergence", "kind": "other_graph", "fields": ["graph"], "ranks": [mine["rank"]],
            "absent": [peer], "slot": mine.get("slot"), "first_collective": first, "text": "\n".join(lines)}


def _held(rank: int, s: dict[str, Any] | None, held: dict[str, Any], by: int) -> str:
    frame = (s or {}).get("frame") or held.get("frame") or {}
    return (f"  rank {rank} holds graph #{(s or held).get('n')} of frame '{frame.get('name')}' ({frame.get('site')}) at"
            f" call {(s or held).get('call')}: rank {by} never compiled it there")  # fmt: skip


def cycle(group: str, ranks: list[int], mine: dict[str, Any], peer: int, theirs: dict[str, Any] | None,
          held: dict[str, Any], streams: dict[int, list[dict[str, Any]]] | None) -> dict[str, Any]:  # fmt: skip
    """The verdict of a wait-for cycle (compile_guard.agreement.protocol, rule 7): I hold `mine`, `peer` holds
    `held` (its statement `theirs`), each waits for the other's statement, which can never come."""
    pair = sorted([mine, *([theirs] if theirs else [])], key=lambda s: s["rank"])
    lines = [f"compile divergence in group {group} (ranks {ranks}): the ranks took different paths; each holds a graph"
             " the other never compiled at that call, so no rank can go on (a wait-for cycle); stopped before either"
             " graph's first run", _held(mine["rank"], mine, mine, peer), _held(peer, theirs, held, mine["rank"]),
             *(f"  {describe(s)}" for s in pair)]  # fmt: skip
    first = None
    if streams is not None:
        parted = streams_part(streams)
        counts = ", ".join(f"rank{r} {len(c)}" for r, c in sorted(streams.items()))
        first = parted[1] if parted else None
        lines.append(f"collective streams within the parent call part at {first}" if parted else
                     f"collective streams within the parent call line up so far ({counts} collectives): each rank"
                     " broke the frame somewhere else")  # fmt: skip
    lines += ["graph breaks that put each rank on its path (since its previous graph):", breaks_text(pair)]
    return {"error": "CompileDivergence", "kind": "cycle", "fields": ["path"], "ranks": sorted([mine["rank"], peer]),
            "slot": mine.get("slot"), "held": {str(mine["rank"]): mine.get("slot"), str(peer): held.get("slot")},
            "first_collective": first, "text": "\n".join(lines)}  # fmt: skip


def split_elsewhere(group: str, ranks: list[int], mine: dict[str, Any], own: dict[str, Any], theirs: dict[str, Any],
                    streams: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:  # fmt: skip
    """The verdict when a peer split the parent call of my graph at other breaks than mine (protocol rule 8): it
    goes on in a resume function of its own and never runs mine in that call. `own`/`theirs`: the parent graphs."""
    peer, parent = theirs["rank"], mine["parent"]
    parted = streams_part(streams)
    counts = ", ".join(f"rank{r} {len(c)}" for r, c in sorted(streams.items()))
    lines = [f"compile divergence in group {group} (ranks {ranks}): the ranks broke frame '{parent.get('name')}' call"
             f" {parent.get('call')} at different places, so rank {peer} never runs graph #{mine.get('n')} of frame"
             f" '{mine['frame']['name']}' in that call (the ranks took different paths); stopped before its first run",
             f"  rank {mine['rank']} broke it at {', '.join(split_sites(own)) or '?'}; rank {peer} at"
             f" {', '.join(split_sites(theirs)) or '?'}", f"  {describe(mine)}",
             f"collective streams within the call part at {parted[1]}" if parted else
             f"collective streams within the call line up so far ({counts} collectives; rank {peer}'s next graph not"
             " compiled yet)", "graph breaks (since each rank's previous graph):",
             breaks_text(sorted([own, theirs], key=lambda s: s["rank"]))]  # fmt: skip
    return {"error": "CompileDivergence", "kind": "split", "fields": ["path"], "ranks": sorted([mine["rank"], peer]),
            "slot": mine.get("slot"), "first_collective": parted[1] if parted else None, "text": "\n".join(lines)}


def split_sites(s: dict[str, Any]) -> list[str]:
    """The sites of the breaks that split a statement's graph (one without the field: every break since the previous
    graph, as before the field existed); empty: the graph is its frame's whole call."""
    return s["split"] if "split" in s else [b.get("site") for b in s.get("breaks") or []]


def issued_mismatch(group: str, ranks: list[int], statements: list[dict[str, Any]],
                    issued: dict[int, dict[str, Any]], *, asymmetric: bool = False) -> dict[str, Any] | None:  # fmt: skip
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
    streams = {r: [{k: v for k, v in c.items() if k != "merged"} for c in i.get("collectives") or []]
               for r, i in sorted(issued.items())}  # fmt: skip
    if asymmetric and any(i.get("cut") for i in issued.values()):
        return None  # lists cut: nothing to line up; the streams were judged on the dispatch schedules
    found = _first_difference(streams, ended_differs=not asymmetric)
    if found is None and asymmetric:
        return None
    first = None
    if found is not None:
        at = found[0]
        nth = {r: (i.get("collectives") or [])[at:at + 1] for r, i in issued.items()}  # [] past its end
        dispatch = statements[0].get("collectives") or []
        first = f"#{at}: " + " | ".join(f"rank{r} {describe_issued(nth[r][0] if nth[r] else None, dispatch)}"
                                        for r in sorted(nth))  # fmt: skip
    settings = _settings_rows(statements)
    lines = [header(group, ranks, statements[0]).replace("stopped before", "the compiled code issues other"
             " collectives on each rank; stopped before"),  # fmt: skip
             "  the graphs agree (structure, dispatch schedule, settings); what differs was decided after them, by"
             " the compiler's passes (bucketing, reordering, overlap scheduling, estimates that differ by rank)",
             *(f"  rank {r}: {i.get('by')} issues {i.get('total')} collectives (digest {i.get('digest')})"
               for r, i in sorted(issued.items())),
             f"first differing issued collective: {first or '(the schedules were cut; their digests differ)'}",
             "settings that differ: " + ("(none)" if not settings else
                                         tabulate(settings, headers=["setting", *(f"rank{s['rank']}" for s in statements)],
                                                  disable_numparse=True))]  # fmt: skip
    return {"error": "CompileDivergence", "kind": "issued", "fields": ["issued_schedule"], "ranks": sorted(issued),
            "slot": statements[0].get("slot"), "first_collective": first, "text": "\n".join(lines)}


def ledger_mismatch(name: str, n: int, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The verdict when the ranks' entry n of a ledger group differ (op, group, arguments); None if alike."""
    issued = [{k: v for k, v in e.items() if k not in ("rank", "site")} for e in entries]
    if all(e == issued[0] for e in issued):
        return None
    lines = [f"eager collective #{n} on group {name} differs across ranks; stopped before the call"]
    lines += [f"  rank{e['rank']}: {e['op']} {json.dumps(e.get('args'), sort_keys=True)} at {e.get('site')}"
              for e in entries]  # fmt: skip
    return {"error": "CollectiveMismatch", "kind": "mismatch", "entry": n, "fields": ["entry"],
            "first_collective": lines[1:], "text": "\n".join(lines)}  # fmt: skip


def ledger_ended(name: str, n: int, mine: dict[str, Any], peer: int, final: dict[str, Any]) -> dict[str, Any]:
    """The verdict when a peer left the ledger before issuing entry n: it never will."""
    issued = (final.get("entries") or {}).get(name, 0)
    text = (f"eager collective #{n} on group {name}: rank {peer} left after {issued} entries; stopped before the call\n"
            f"  rank{mine['rank']}: {mine['op']} {json.dumps(mine.get('args'), sort_keys=True)} at {mine.get('site')}")
    return {"error": "CollectiveMismatch", "kind": "ended", "entry": n, "fields": ["entry"], "text": text}


def _state(report: dict[str, Any] | None, now: float) -> str:
    if report is None:
        return "no answer (stopped, or wedged outside Python)"
    holding, busy = report.get("holding"), report.get("busy")
    if busy:
        return f"compiling {busy}"
    if not holding:
        return "running (holds nothing)"
    waited = f"{now - holding['since']:.1f}s" if isinstance(holding.get("since"), (int, float)) else "?"
    if holding.get("what") == "ledger":
        return f"holds eager #{holding.get('entry')} {holding.get('op')} on {holding.get('group')} ({waited})"
    frame = holding.get("frame") or {}
    return f"holds graph #{holding.get('n')} '{frame.get('name')}' call {holding.get('call')} ({waited})"


def stall_text(group: str, ranks: list[int], reports: dict[int, dict[str, Any]], *, what: str, quiet_s: float,
               now: float) -> str:  # fmt: skip
    """The stall report: one row per rank of the group, its position and its main thread's innermost lines."""
    rows = []
    for r in ranks:
        report = reports.get(r)
        frames = (report or {}).get("frames") or {}
        calls = ", ".join(f"{f['name']} x{f['calls']}" for f in frames.values()) or "-"
        entries = ", ".join(f"{g}:{k}" for g, k in ((report or {}).get("entries") or {}).items()) or "-"
        stack = " < ".join((report or {}).get("stack") or []) or "-"
        rows.append([r, _state(report, now), calls[:40], entries[:24], stack[:110]])
    head = (f"stall in group {group} (ranks {ranks}): no progress for {quiet_s:.1f}s while waiting for {what};"
            " no proof of a divergence: every rank stops, before the group's own timeout would have ended it")
    return head + "\n" + tabulate(rows, headers=["rank", "state", "compiled calls", "ledger", "main thread"],
                                  disable_numparse=True)  # fmt: skip
