"""What a rank states about one compiled graph, and what two ranks' statements say when they differ.

A statement is read while dynamo hands the graph to the backend: the frame (code name and user
site), dynamo's compile id, why this compile happened (the failed guard of a recompile, the
graph breaks since the last graph), the graph's fingerprint, its collective schedule after
dispatch, and the compile settings in force. Ranks of a group compile the same program, so
every field but `rank` must agree; a divergence report names the fields that do not, the
first collective that differs, and the break sites.
"""

from __future__ import annotations

import collections
import re
from typing import Any

import torch
from tabulate import tabulate

from compile_guard.health.probe import graph_fingerprint
from compile_guard.health.schedule import collective_schedule
from compile_guard.health.settings import settings_payload
from compile_guard.health.sites import BreakSites, relative_site

AGREED = ("frame", "compile_id", "fingerprint", "schedule_digest", "settings")  # must be equal on every rank
MAX_COLLECTIVES = 256  # a statement carries at most this many schedule entries (the digest covers all)


_FILE_LINE = re.compile(r'File "(.+?)", line (\d+)')


def guard_reason(raw: str | None) -> str | None:
    """dynamo's recompile reason made one line: 'guard failed: <guard> at <user site> | <source line>'."""
    if not raw:
        return None
    text, _, stack = raw.partition("User stack trace")
    parts = [p.strip() for p in re.sub(r"^\s*\d+/\d+:\s*", "", text).split(" # ")]
    frames = _FILE_LINE.findall(stack)
    site = relative_site(frames[-1][0], int(frames[-1][1])) if frames else (parts[2] if len(parts) > 2 else "?")
    source = f" | {parts[1]}" if len(parts) > 1 else ""
    where = f" at {site}" if site != "?" else ""
    return " ".join(f"guard failed: {parts[0]}{where}{source}".split())[:300]


def _frame() -> tuple[dict[str, str], str | None]:
    """(the frame dynamo is compiling, its recompile reason) — read inside the backend call."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator
        from torch._dynamo.utils import get_metrics_context

        code = InstructionTranslator.current_tx().f_code
        frame = {"name": code.co_name, "site": relative_site(code.co_filename, code.co_firstlineno)}
        reason = getattr(get_metrics_context(), "_metrics", {}).get("recompile_reason")
    except Exception:  # not under dynamo (a backend called by hand) or internals moved in a torch upgrade
        return {"name": "?", "site": "?"}, None
    return frame, guard_reason(reason)


def _compile_id() -> str:
    from torch._guards import CompileContext

    cid = CompileContext.current_compile_id()
    return str(cid) if cid is not None else "?"


class StatementMaker:
    """Builds each graph's statement; remembers which breaks it already reported."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.sites = BreakSites()
        self._reported: collections.Counter = collections.Counter()

    def new_breaks(self) -> list[dict[str, Any]]:
        fresh = self.sites.sites - self._reported
        self._reported.update(fresh)
        return [{"reason": f"{gb}: {self.sites.titles.get(gb, '?')}", "site": site, "count": n,
                 "source": self.sites.source.get(site, "")} for (gb, site), n in sorted(fresh.items())]  # fmt: skip

    def make(self, n: int, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> dict[str, Any]:
        frame, reason = _frame()
        schedule = collective_schedule(gm, example_inputs)
        collectives = schedule.get("collectives") or []
        return {
            "n": n, "rank": self.rank, "frame": frame, "compile_id": _compile_id(), "recompile_reason": reason,
            "breaks": self.new_breaks(), "fingerprint": graph_fingerprint(gm)["fingerprint"],
            "schedule_digest": schedule.get("digest") or f"unread: {schedule.get('error', '?')}"[:120],
            "collectives": collectives[:MAX_COLLECTIVES], "collectives_total": len(collectives),
            "settings": settings_payload(),
        }  # fmt: skip


def differing(statements: list[dict[str, Any]]) -> list[str]:
    """The agreed fields whose values are not the same in every statement."""
    return [k for k in AGREED if any(s.get(k) != statements[0].get(k) for s in statements)]


def _collective(c: dict[str, Any] | None) -> str:
    if c is None:
        return "(none)"
    group = c.get("group") or {}
    return (f"{c.get('op')} {group.get('name')}{group.get('ranks') or ''} {c.get('shape')} {c.get('dtype')}"
            f"{' ' + c['reduce_op'] if c.get('reduce_op') else ''} at {c.get('site') or '?'}")  # fmt: skip


def first_differing_collective(statements: list[dict[str, Any]]) -> str | None:
    """'#i: rank0 <op group shape dtype at site> | rank1 ...' at the first position that differs."""
    schedules = [s.get("collectives") or [] for s in statements]
    for i in range(max(len(c) for c in schedules)):
        entries = [c[i] if i < len(c) else None for c in schedules]
        issued = [None if e is None else {k: v for k, v in e.items() if k != "site"} for e in entries]
        if any(e != issued[0] for e in issued):
            pairs = zip(statements, entries, strict=True)
            return f"#{i}: " + " | ".join(f"rank{s['rank']} {_collective(e)}" for s, e in pairs)
    return None


def _settings_rows(statements: list[dict[str, Any]]) -> list[list[Any]]:
    keys = sorted(set().union(*(s.get("settings", {}) for s in statements)))
    values = [[s.get("settings", {}).get(k, "<absent>") for s in statements] for k in keys]
    return [[f"settings.{k}", *v] for k, v in zip(keys, values, strict=True) if any(x != v[0] for x in v)]


def table(statements: list[dict[str, Any]]) -> str:
    """field | rank... for every field of the statements that tells the ranks apart."""
    rows = [[k, *(str(s.get(k))[:48] for s in statements)] for k in ("frame", "compile_id", "recompile_reason",
            "fingerprint", "schedule_digest", "collectives_total")
            if any(s.get(k) != statements[0].get(k) for s in statements)]  # fmt: skip
    rows += _settings_rows(statements)
    return tabulate(rows, headers=["field", *(f"rank{s['rank']}" for s in statements)], disable_numparse=True)


def breaks_text(statements: list[dict[str, Any]]) -> str:
    lines = [f"  rank{s['rank']}: {b['reason']} at {b['site']} x{b['count']}  | {b['source']}"
             for s in statements for b in s.get("breaks", [])]  # fmt: skip
    return "\n".join(lines) or "  (none on any rank)"


def describe(s: dict[str, Any]) -> str:
    why = s.get("recompile_reason") or ("graph break" if s.get("breaks") else "first compile")
    return (f"rank {s['rank']} compiled frame '{s['frame']['name']}' ({s['frame']['site']}), compile id"
            f" {s['compile_id']}, because: {why}")  # fmt: skip
