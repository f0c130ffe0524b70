"""Where code is: a file:line made portable, and the graph-break sites dynamo logs.

dynamo states a break's user site only in its graph-break artifact log; `BreakSites` is a
handler on that logger that keeps (break registry id, site) counts and each site's source
line. The probe and the compile agreement each attach one.
"""

from __future__ import annotations

import collections
import linecache
import logging
import re
from pathlib import Path

GB_ID = re.compile(r"/gb/(gb\d+)\.html")
SITE = re.compile(r"in user code at (.+?):(\d+)\n")
BREAK_LOGGER = "torch._dynamo.symbolic_convert.__graph_breaks"


def relative_site(filename: str, line: int) -> str:
    """file:line with the path made portable (repo-relative, or from site-packages on)."""
    path = Path(filename)
    parts = path.parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return f"{'/'.join(parts[parts.index(anchor) + 1:])}:{line}"
    for root in ("engine", "compile_guard", "repro", "docs"):
        if root in parts:
            return f"{'/'.join(parts[len(parts) - 1 - parts[::-1].index(root):])}:{line}"
    return f"{path.name}:{line}"


def break_title(reason: str) -> str:
    """The break type's title: the line before dynamo's 'Explanation:' (the first line is a generic
    'Encountered graph break when attempting to trace ...' wrapper)."""
    lines = [line.strip() for line in reason.strip().splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("Explanation:"):
            before = [x for x in lines[:i] if x]
            return (before[-1] if before else line)[:120]
    return (lines[0] if lines else "?")[:120]


class BreakSites(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.sites: collections.Counter = collections.Counter()  # (reason, site) -> count
        self.source: dict[str, str] = {}  # site -> its source line, read where the code is
        self.titles: dict[str, str] = {}  # registry id -> the break type's title, as dynamo states it

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        site = SITE.search(message + "\n")
        if site is None:
            return
        reason = message.split("Graph Break Reason:", 1)[-1]
        # The innermost break type is the first registry id in the reason text.
        gb = GB_ID.search(reason)
        key = gb.group(1) if gb else "?"
        where = relative_site(site.group(1), int(site.group(2)))
        self.sites[(key, where)] += 1
        self.titles.setdefault(key, break_title(reason))
        self.source.setdefault(where, linecache.getline(site.group(1), int(site.group(2))).strip())
