"""The watcher: a thread per rank and agreement that stops its rank the moment a verdict stands.

Whichever rank finds a divergence writes the verdict and wakes every rank's watcher
(compile_guard.agreement.channel). A rank whose main thread is waiting in an agreement of its
own raises the verdict there, as an ordinary exception; any other rank may be anywhere — inside
a collective its peer will never join, or idle — so its watcher ends the process itself, after
logging the report and writing the failure record: crash > hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Any, Iterator

import torch.distributed as dist

from compile_guard.agreement.channel import SideChannel
from engine import events
from engine.errors import CollectiveMismatch, CompileDivergence, EngineError, ProtocolError
from engine.failure import record_failure

log = logging.getLogger("compile_guard.agreement")
ERRORS: dict[str, type[EngineError]] = {e.__name__: e for e in (CompileDivergence, CollectiveMismatch, ProtocolError)}
WATCH_SLICE_S = 600.0  # the watcher's blocking wait, renewed until close
DEFER_S = 1.0  # a watcher whose rank waits in an agreement lets that agreement raise the verdict for this long


def error_of(verdict: dict[str, Any]) -> type[EngineError]:
    return ERRORS.get(verdict.get("error", ""), CompileDivergence)


def announce(verdict: dict[str, Any], *, detector: int, group: str, ranks: tuple[int, ...], event: str) -> None:
    events.emit(event, graph=verdict.get("graph"), entry=verdict.get("entry"), kind=verdict.get("kind"),
                fields=verdict.get("fields"), by=verdict.get("by"), detector=detector, group=group, ranks=list(ranks),
                first_collective=verdict.get("first_collective"))  # fmt: skip
    log.error("%s", verdict.get("text"))


class Watcher:
    def __init__(self, store: dist.Store, *, prefix: str, rank: int, group: str, ranks: tuple[int, ...],
                 event: str) -> None:  # fmt: skip
        self.channel = SideChannel(store, prefix=prefix)  # its own connection: it blocks in `wait`
        self.rank, self.group, self.ranks, self.event = rank, group, ranks, event
        self._lock = threading.Lock()
        self._waiting = False  # the main thread waits in an agreement: it raises the verdict itself
        self._raised = threading.Event()  # this rank raised a verdict itself: never stop it a second time
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name=f"cg-watch-{prefix}", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around the main thread's own wait for its peers."""
        with self._lock:
            self._waiting = True
        try:
            yield
        finally:
            with self._lock:
                self._waiting = False

    def raise_verdict(self, verdict: dict[str, Any]) -> None:
        self._raised.set()
        announce(verdict, detector=self.rank, group=self.group, ranks=self.ranks, event=self.event)
        raise error_of(verdict)(verdict["text"])

    def _watch(self) -> None:
        try:
            while True:
                why = self.channel.wait_wake(self.rank, WATCH_SLICE_S)
                if why is None:
                    continue
                if why == "closed":
                    return
                verdict = self.channel.verdict() or {"text": f"woken with {why!r} and no verdict"}
                with self._lock:
                    waiting, closed = self._waiting, self._closed
                if closed or (waiting and self._raised.wait(DEFER_S)) or self._raised.is_set():
                    return  # the main thread raised it in its own wait (or the agreement is over)
                self.stop(verdict)
        except (dist.DistError, RuntimeError) as exc:  # the store went away: the job is over anyway
            log.info("watcher of group %s ends: %s", self.group, exc)

    def stop(self, verdict: dict[str, Any]) -> None:
        """Stop this rank now, wherever its main thread is (inside a collective, say)."""
        error = error_of(verdict)
        announce(verdict, detector=self.rank, group=self.group, ranks=self.ranks, event=self.event)
        head, _, rest = str(verdict.get("text")).partition("\n")
        exc = error(f"{head} (stopped by rank {verdict.get('by')}'s verdict)\n{rest}")
        record_failure(exc)
        events.emit("fatal", error=error.__name__, exit_code=error.exit_code, message=str(exc).splitlines()[0])
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(error.exit_code)

    def close(self, channel: SideChannel) -> None:
        """End the watcher (through the main thread's `channel`: this one may be blocked in a wait)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            channel.wake(self.rank, "closed")
        except (dist.DistError, RuntimeError):  # the store is gone: the watcher ends on its own error
            pass
        self._thread.join(timeout=5.0)
