"""Worker watchdog: a worker waiting for a header longer than the window exits on its own.

Armed only while the worker waits for the next header (rank0 sends NOOP heartbeats while
idle, so a healthy driver never lets it expire); disarmed while a chunk runs. On expiry
the worker is blocked inside a collective that cannot be interrupted, so it logs the last
header's time and IDs and hard-exits (os._exit) with WatchdogExpired's code.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from engine import events
from engine.errors import WatchdogExpired
from engine.failure import abort

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, *, window_s: float, rank: int, exit_status: Callable[[int], int] = int) -> None:
        if not window_s > 0:
            raise ValueError(f"watchdog window_s={window_s} is invalid; expected seconds > 0")
        self.window_s = window_s
        self.rank = rank
        self.exit_status = exit_status  # the rank's (RankContext.exit_status): how its process ends on expiry
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._armed_s = window_s  # the window of the current wait
        self._closed = False
        self.last_header_t: float | None = None  # CLOCK_MONOTONIC of the last header
        self.last_ids: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name="cg-watchdog", daemon=True)
        self._thread.start()

    def arm(self, window_s: float | None = None) -> None:
        """Expect a header within `window_s` (default: the watchdog's window)."""
        with self._cond:
            self._armed_s = self.window_s if window_s is None else window_s
            self._deadline = time.monotonic() + self._armed_s
            self._cond.notify()

    def header_seen(self, ids: dict[str, Any]) -> None:
        with self._cond:
            self._deadline = None
            self.last_header_t = time.monotonic()
            self.last_ids = dict(ids)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._expire()

    def _expire(self) -> None:
        since = None if self.last_header_t is None else round(time.monotonic() - self.last_header_t, 3)
        exc = WatchdogExpired(
            f"rank {self.rank}: no header for {self._armed_s}s (last header {since}s ago, ids {self.last_ids});"
            " the driver (rank0) is gone or frozen: exiting instead of waiting for the backend timeout"
        )
        events.emit(
            "watchdog_expired", rank=self.rank, window_s=self._armed_s, since_last_header_s=since, **self.last_ids
        )
        log.error("%s", exc)
        abort(exc, self.exit_status)
