"""What a rank states about one compiled graph, read while dynamo hands the graph to the backend.

A statement names its **slot** — the frame, the call of that frame this rank is making (its local
count, compile_guard.agreement.positions) and j (the graphs compiled at that call so far) — and,
for a frame compiled inside another compiled call (a resume function after a graph break), that
**parent** call. Then what the ranks compare (compile_guard.agreement.compare): the graph's structure
fingerprint and its constants (compile_guard.health.structure), the collective schedule after
dispatch, the compile settings; and what explains a difference: dynamo's compile id, each cache
entry's failed guard (the entry of the same module instance first), the graph breaks since the
last graph with their sites, and among them the ones logged while this very graph was traced: the breaks
that **split** its frame (empty: the graph is the frame's whole call).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import os
import re
import sys
from typing import Any

import torch

from compile_guard import compat
from compile_guard.agreement.compare import SiteOf
from compile_guard.agreement.entries import Break, Frame, Parent, Statement
from compile_guard.agreement.ops import ChannelError, encode
from compile_guard.agreement.positions import Positions, slot_key
from compile_guard.health.schedule import collective_schedule
from compile_guard.health.settings import stated_settings
from compile_guard.health.sites import BreakSites, relative_site
from compile_guard.health.structure import constant_site, graph_structure

MAX_COLLECTIVES = 256  # a statement carries at most this many schedule entries (the digest covers all)
MAX_CONSTANTS = 2000  # and this many constants (their digest covers all)
_FILE_LINE = re.compile(r'File "(.+?)", line (\d+)')
_OURS = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(os.path.dirname(__file__)) + os.sep)


def frame_id(name: str, site: str) -> str:
    return hashlib.sha1(f"{name}@{site}".encode()).hexdigest()[:10]


_SOURCE_NAME = re.compile(r"\b[LG]\['(\w+)'\]")


def guard_reason(raw: str | None) -> str | None:
    """dynamo's failed guard made one line: 'guard failed: <guard> at <user site> | <source line>'."""
    if not raw:
        return None
    text, _, stack = raw.partition("User stack trace")
    entry = re.match(r"^\s*(\d+/\d+):", text)
    parts = [p.strip() for p in re.sub(r"^\s*\d+/\d+:\s*", "", text).split(" # ")]
    frames = _FILE_LINE.findall(stack)
    site = relative_site(frames[-1][0], int(frames[-1][1])) if frames else (parts[2] if len(parts) > 2 else "?")
    source = f" | {parts[1]}" if len(parts) > 1 else ""
    where = f" at {site}" if site != "?" else ""
    of = f" (cache entry {entry.group(1)})" if entry else ""
    guard = _SOURCE_NAME.sub(r"\1", parts[0])  # torch 2.6 names a local as dynamo's source, L['x']; 2.7+ as x
    return " ".join(f"guard failed{of}: {guard}{where}{source}".split())[:300]


def fit(statement: Statement, *, what: str) -> Statement:
    """The statement as published: cut (constants, then collectives; digests kept) until it fits the limit."""
    for cut in ({}, {"constants": []}, {"constants": [], "collectives": [], "cut": True}):
        fitted = dataclasses.replace(statement, **cut)
        try:
            encode(fitted.to_json(), what=what)
            return fitted
        except ChannelError:
            continue
    raise ChannelError(f"{what} does not fit the store's entry limit even without its lists")


class StatementMaker:
    """Builds each graph's statement; remembers which breaks and failed guards it already reported."""

    def __init__(self, rank: int, positions: Positions) -> None:
        self.rank, self.positions = rank, positions
        self.sites = BreakSites(compile_id=compat.compile_id)
        self._reported: collections.Counter = collections.Counter()
        self._at_call: collections.Counter = collections.Counter()  # (fid, call) -> graphs stated there
        self._failures_read: dict[int, int] = {}  # id(code) -> guard failures already read
        self._owner: dict[str, int | None] = {}  # compile id -> id() of the frame's `self` (the module instance)

    def new_breaks(self) -> list[Break]:
        fresh = self.sites.sites - self._reported
        self._reported.update(fresh)
        return [
            Break(
                reason=f"{gb}: {self.sites.titles.get(gb, '?')}",
                site=site,
                count=n,
                source=self.sites.source.get(site, ""),
            )
            for (gb, site), n in sorted(fresh.items())
        ]

    def _reasons(self, code: Any, f_locals: dict[str, Any], cid: str) -> list[str]:
        """Each cache entry's failed guard for this recompile, the entry of the same `self` first."""
        failures = compat.guard_failures(code) if code is not None else []
        fresh = failures[self._failures_read.get(id(code), 0) :]
        self._failures_read[id(code)] = len(failures)
        owner = id(f_locals["self"]) if "self" in f_locals else None
        self._owner[cid] = owner

        def same_owner_first(raw: str) -> int:
            entry = re.match(r"^\s*(\d+/\d+):", raw)
            return 0 if entry and owner is not None and self._owner.get(entry.group(1)) == owner else 1

        if not fresh and compat.recompile_reason():
            fresh = [compat.recompile_reason()]
        return [r for r in (guard_reason(raw) for raw in sorted(fresh, key=same_owner_first)) if r][:8]

    def _parent(self) -> Parent | None:
        """The compiled call this graph runs inside: the innermost frame on the stack (outside torch and
        compile_guard) that is a frame this agreement compiled and is calling now."""
        frame = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if not code.co_filename.startswith(_OURS):
                fid = frame_id(code.co_name, relative_site(code.co_filename, code.co_firstlineno))
                record = self.positions.frames.get(fid)
                if record is not None and record.count > 0:
                    return Parent(fid=fid, call=record.count - 1, name=code.co_name)
            frame = frame.f_back
        return None

    def make(self, n: int, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> tuple[Statement, SiteOf]:
        """(the statement of graph n, this rank's map from a constant's place to its site)."""
        found = compat.compiling_frame()
        code, f_locals = found if found is not None else (None, {})
        name = code.co_name if code is not None else "?"
        site = relative_site(code.co_filename, code.co_firstlineno) if code is not None else "?"
        fid = frame_id(name, site)
        call = self.positions.frame(fid, name, site).count
        j = self._at_call[(fid, call)]
        self._at_call[(fid, call)] += 1
        cid = compat.compile_id()
        if len(self.sites.during) > 256:  # compiles that logged breaks and made no graph (skipped frames)
            self.sites.during = {k: v for k, v in self.sites.during.items() if k == cid}
        reasons = self._reasons(code, f_locals, cid)
        structure = graph_structure(gm)
        schedule = collective_schedule(gm, example_inputs)
        collectives = schedule["collectives"]
        constants = structure["constants"]
        settings, settings_digest = stated_settings()
        statement = Statement(
            n=n,
            rank=self.rank,
            slot=slot_key(fid, call, j),
            fid=fid,
            call=call,
            j=j,
            frame=Frame(name=name, site=site),
            parent=self._parent(),
            compile_id=cid,
            recompile_reason=reasons[0] if reasons else None,
            recompile_reasons=reasons,
            breaks=self.new_breaks(),
            split=self.sites.during.pop(cid, []),
            fingerprint=structure["fingerprint"],
            schedule_digest=schedule["digest"],
            collectives=collectives[:MAX_COLLECTIVES],
            collectives_total=len(collectives),
            constants=constants[:MAX_CONSTANTS],
            constants_total=len(constants),
            constants_digest=structure["constants_digest"],
            settings=settings,
            settings_digest=settings_digest,
        )
        return statement, functools.partial(constant_site, gm)
