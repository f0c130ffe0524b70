"""Failure records: when and why a rank failed, written where its launcher looks.

A rank writes one (atomically) the moment it fails — before tearing down — so the launcher
can tell the rank that failed first from the peers that failed because of it. Data only
(JSON), never code. No torch import: the parent's launcher reads these too.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

from engine import events, knobs
from engine.atomic_json import write_json
from engine.errors import EngineError

FAILURE_FILE = "failure-rank{rank}.json"  # in COMPILE_GUARD_RUN_DIR


def record_failure(exc: BaseException) -> None:
    """Write when and why this rank failed; no-op outside a launcher run."""
    run_dir = knobs.read("COMPILE_GUARD_RUN_DIR")
    rank = knobs.read("RANK")
    if not run_dir or rank is None:
        return
    record = {"rank": rank, "t_monotonic": time.monotonic(), "error": f"{type(exc).__name__}: {exc}"[:8000]}
    write_json(Path(run_dir) / FAILURE_FILE.format(rank=rank), record)


# What a process's exit status is for a rank code (RankContext.exit_status, given to engine.rank_process.rank_main):
# the code itself for a rank program; a harness that runs the rank body inside its own CLI process
# (compile_guard's in-place run mode) maps it to its CLI code, after telling its peers (so every rank of the job
# exits the same).
ExitStatus = Callable[[int], int]


def abort(exc: EngineError, exit_status: ExitStatus = int) -> NoReturn:
    """End this process now, from a thread that cannot raise into the main one (the watchdog, a watcher: the
    main thread may be blocked in a collective forever): the failure record, the fatal event, flushed logs, then
    `exit_status` of `exc`'s rank code (the rank's RankContext.exit_status)."""
    record_failure(exc)
    message = str(exc).splitlines()[0] if str(exc) else ""
    events.emit("fatal", error=type(exc).__name__, exit_code=int(exc.exit_code), message=message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_status(int(exc.exit_code)))
