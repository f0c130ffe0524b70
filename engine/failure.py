"""Failure records: when and why a rank failed, written where its launcher looks.

A rank writes one (atomically) the moment it fails — before tearing down — so the launcher
can tell the rank that failed first from the peers that failed because of it. Data only
(JSON), never code. No torch import: the parent's launcher reads these too.
"""

from __future__ import annotations

import time
from pathlib import Path

from engine import knobs
from engine.atomic_json import write_json

FAILURE_FILE = "failure-rank{rank}.json"  # in COMPILE_GUARD_RUN_DIR


def record_failure(exc: BaseException) -> None:
    """Write when and why this rank failed; no-op outside a launcher run."""
    run_dir = knobs.read("COMPILE_GUARD_RUN_DIR")
    rank = knobs.read("RANK")
    if not run_dir or rank is None:
        return
    record = {"rank": rank, "t_monotonic": time.monotonic(), "error": f"{type(exc).__name__}: {exc}"[:8000]}
    write_json(Path(run_dir) / FAILURE_FILE.format(rank=rank), record)
