"""Structured event lines: `CG_EVENT {json}` in a rank's log.

Every commitment point, rejection, injection and tripwire logs one, carrying the IDs
(`call_id`, `chunk_index`, `cache_epoch`, `group`) and a CLOCK_MONOTONIC time `t`, which
is shared by all processes on a host — the matrix runner measures time-to-fail from them.
The payload is JSON: parsed as data, never executed.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

MARKER = "CG_EVENT "

log = logging.getLogger("engine.events")


def emit(event: str, **fields: Any) -> dict[str, Any]:
    record = {"event": event, "t": time.monotonic(), **fields}
    log.info("%s%s", MARKER, json.dumps(record, sort_keys=True, default=str))
    return record


def parse(text: str) -> list[dict[str, Any]]:
    """Every event in a log text, in order; lines that do not parse are skipped."""
    events = []
    for line in text.splitlines():
        _, sep, payload = line.partition(MARKER)
        if not sep:
            continue
        try:
            record = json.loads(payload)
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record:
            events.append(record)
    return events
