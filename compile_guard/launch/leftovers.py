"""What a finished launch left alive: processes in a rank's session or carrying its rendezvous port.

Read from /proc, by session id and by environment; used by the matrix's judge, the tests and
the pytest plugin to prove that nothing outlived a run.
"""

from __future__ import annotations

from pathlib import Path

from compile_guard.launch.launcher import LaunchResult
from compile_guard.launch.supervision import sessions_alive


def processes_with_env(entry: str) -> set[int]:
    """pids of live processes whose environment holds `entry` (e.g. MASTER_PORT=1234)."""
    found, needle = set(), entry.encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                found.add(int(environ.parent.name))
        except OSError:
            continue
    return found


def leftover_pids(result: LaunchResult) -> list[int]:
    """Processes of a finished launch still alive: in a rank's session or on its port."""
    sessions = sessions_alive({r.pid for r in result.ranks})
    return sorted(sessions | processes_with_env(f"MASTER_PORT={result.master_port}"))
