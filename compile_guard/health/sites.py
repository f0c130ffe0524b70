"""Where code is: a file:line made portable, and the graph-break sites dynamo logs.

dynamo states a break's user site only in its graph-break artifact log; `BreakSites` is a
handler on that logger that keeps (break registry id, reason key, site) counts and each
site's source line. The reason key is the break's title (`break_title`: the line before
dynamo's "Explanation:", past 2.13's "Encountered graph break ..." wrapper), the key the
break-reason counts use (compile_guard.health.policy.reason_key), so a reason can be traced
to its sites. The probe and the compile agreement each attach one.
"""

from __future__ import annotations

import collections
import linecache
import logging
import re
from pathlib import Path
from typing import Callable

from compile_guard.health.policy import reason_key

GB_ID = re.compile(r"/gb/(gb\d+)\.html")
SITE = re.compile(r"in user code at (.+?):(\d+)\n")


def relative_site(filename: str, line: int) -> str:
    """file:line with the path made portable (repo-relative, or from site-packages on)."""
    path = Path(filename)
    parts = path.parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return f"{'/'.join(parts[parts.index(anchor) + 1 :])}:{line}"
    for root in ("engine", "compile_guard", "repro", "docs"):
        if root in parts:
            return f"{'/'.join(parts[len(parts) - 1 - parts[::-1].index(root) :])}:{line}"
    return f"{path.name}:{line}"


def break_title(reason: str) -> str:
    """The break type's title: the line before dynamo's 'Explanation:' (the first line is a generic
    'Encountered graph break when attempting to trace ...' wrapper), without an object's address (2.6 names
    the function with it, which differs by rank)."""
    lines = [line.strip() for line in reason.strip().splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("Explanation:"):
            before = [x for x in lines[:i] if x]
            return reason_key(before[-1] if before else line)
    return reason_key(lines[0] if lines else "?")


def _reason_text(message: str) -> str:
    """The reason in one graph-break log record: after "Graph Break Reason:" (2.7+) or "Reason: Unsupported:"
    (2.6, whose counter key has no "Unsupported:" prefix)."""
    if "Graph Break Reason:" in message:
        return message.split("Graph Break Reason:", 1)[1]
    legacy = re.search(r"\nReason: (?:Unsupported: )?(.*)", message, re.DOTALL)
    return legacy.group(1) if legacy else message


class BreakSites(logging.Handler):
    """compile_id: dynamo's id of the compile in progress (compile_guard.compat.compile_id): when given, each break
    is also kept under the compile that logged it, so a graph's statement names the breaks that split it."""

    def __init__(self, compile_id: Callable[[], str] | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self._compile_id = compile_id
        self.during: dict[str, list[str]] = {}  # compile id -> the sites of the breaks logged while it traced
        self.breaks: collections.Counter = collections.Counter()  # (registry id, reason key, site) -> count
        self.source: dict[str, str] = {}  # site -> its source line, read where the code is
        self.titles: dict[str, str] = {}  # registry id -> the break type's title, as dynamo states it

    @property
    def sites(self) -> collections.Counter:
        """(registry id, site) -> count."""
        found: collections.Counter = collections.Counter()
        for (gb, _key, where), n in self.breaks.items():
            found[(gb, where)] += n
        return found

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        site = SITE.search(message + "\n")
        if site is None:
            return
        reason = _reason_text(message)
        # The innermost break type is the first registry id in the reason text.
        gb = GB_ID.search(reason)
        key = gb.group(1) if gb else "?"
        where = relative_site(site.group(1), int(site.group(2)))
        self.breaks[(key, break_title(reason), where)] += 1
        self.titles.setdefault(key, break_title(reason))
        if self._compile_id is not None:
            found = self.during.setdefault(self._compile_id(), [])
            if where not in found:
                found.append(where)
        self.source.setdefault(where, linecache.getline(site.group(1), int(site.group(2))).strip())
