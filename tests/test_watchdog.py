"""Watchdog in a child process (it hard-exits the process it runs in)."""

from __future__ import annotations

import subprocess
import sys
import time

from engine.errors import WatchdogExpired

PROGRAM = """
import logging, threading, time
logging.basicConfig(level=logging.INFO)
from engine.control.watchdog import Watchdog
dog = Watchdog(window_s=0.5, rank=1)
dog.header_seen({"call_id": 4, "chunk_index": 2})
for _ in range(5):  # healthy: a header every 0.1 s keeps it quiet
    dog.arm()
    time.sleep(0.1)
    dog.header_seen({"call_id": 5, "chunk_index": 2})
dog.arm()
threading.Event().wait(30)  # the driver went silent: only the watchdog ends this
"""


def test_watchdog_exits_within_its_window(quick_process):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - t0
    assert proc.returncode == WatchdogExpired.exit_code, proc.stderr
    assert "watchdog_expired" in proc.stderr and '"call_id": 5' in proc.stderr
    assert elapsed < 15  # far below the 30 s wait it interrupted (interpreter start included)
