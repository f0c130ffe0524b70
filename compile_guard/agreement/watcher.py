"""The watcher: a thread per rank and agreement that answers its peers and stops its rank on a verdict.

It runs the protocol's `watch` actor on its own store connection: peers holding a graph or a
ledger entry ask it where this rank is, and it answers from the rank's counters (and, for a stall
report, the main thread's Python stack). Whichever rank finds a divergence or a stall writes the
verdict and wakes every watcher. A rank whose main thread waits in an agreement of its own raises
the verdict there, as an ordinary exception; any other rank may be anywhere — inside a collective
its peer will never join, or idle — so its watcher ends the process itself, after logging the
report and writing the failure record: crash > hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from compile_guard.agreement import protocol
from compile_guard.agreement.channel import Transport
from compile_guard.agreement.entries import Verdict
from compile_guard.agreement.ops import Inbox
from compile_guard.agreement.positions import Positions
from compile_guard.health.sites import relative_site
from engine import events
from engine.errors import CollectiveMismatch, CompileDivergence, EngineError, ProtocolError, Stalled
from engine.failure import abort

log = logging.getLogger("compile_guard.agreement")
ERRORS: dict[str, type[EngineError]] = {
    e.__name__: e for e in (CompileDivergence, CollectiveMismatch, ProtocolError, Stalled)
}
DEFER_S = 1.0  # a watcher whose rank waits in an agreement lets that agreement raise the verdict for this long
RANK_POSITIONS: list[Positions] = []  # every agreement's and ledger's counters in this process (one rank)
_SKIP = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(__file__) + os.sep, threading.__file__)


def default_stall_s(timeout_s: float) -> float:
    """A margin under the group's own timeout: the stall report (a few store round trips and `answer_s`)
    always comes before the job would have failed by itself, and never long before it."""
    return timeout_s - min(max(2.0, 0.1 * timeout_s), timeout_s / 2)


def answer_window_s(stall_s: float, timeout_s: float) -> float:
    """How long a stall report waits for the ranks' positions: half the margin left before the group's timeout
    (so a silent rank costs the report no more than that), at most 2 s, at least 0.2 s; 2 s when the stall window
    was set past the timeout (the report cannot come first then anyway)."""
    return 2.0 if stall_s >= timeout_s else min(2.0, max(0.2, (timeout_s - stall_s) / 2))


def describe_main(depth: int = 4) -> dict[str, Any]:
    """The main thread's innermost frames outside torch and the agreement: where this rank is, for a report."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    sites = []
    while frame is not None and len(sites) < depth:
        code = frame.f_code
        if not code.co_filename.startswith(_SKIP):
            sites.append(f"{relative_site(code.co_filename, frame.f_lineno)} {code.co_name}")
        frame = frame.f_back
    return {"stack": sites}


def error_of(verdict: Verdict) -> type[EngineError]:
    """The verdict's error; a verdict naming none is a protocol anomaly, never a divergence."""
    return ERRORS.get(verdict.error, ProtocolError)


def announce(verdict: Verdict, *, detector: int, group: str, ranks: tuple[int, ...], event: str) -> None:
    events.emit(
        event if verdict.error != "Stalled" else "stall",
        slot=verdict.slot,
        entry=verdict.entry,
        kind=verdict.kind,
        fields=verdict.fields,
        by=verdict.by,
        detector=detector,
        group=group,
        ranks=list(ranks),
        first_collective=verdict.first_collective,
        no_answer=verdict.no_answer,
    )
    log.error("%s", verdict.text)


class Watcher:
    def __init__(
        self, store: dist.Store, link: protocol.Link, *, event: str, exit_status: Callable[[int], int] = int
    ) -> None:
        self.link, self.event = link, event
        self.exit_status = exit_status  # how this process ends when the watcher stops it (RankContext's)
        self.transport = Transport(store)  # its own connection: it blocks in `wait`
        self._lock = threading.Lock()
        self._waiting = False  # the main thread waits in an agreement: it raises the verdict itself
        self._raised = threading.Event()  # this rank raised a verdict itself: never stop it a second time
        self._thread = threading.Thread(target=self._watch, name=f"cg-watch-{link.m.prefix}", daemon=True)
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

    def raise_verdict(self, verdict: Verdict) -> None:
        self._raised.set()
        m = self.link.m
        announce(verdict, detector=m.rank, group=m.group, ranks=m.ranks, event=self.event)
        raise error_of(verdict)(verdict.text)

    def _watch(self) -> None:
        link = self.link
        try:
            kind, verdict = self.transport.run(protocol.watch(link, Inbox(link.m.watch_box(link.m.rank))))
            if kind == "closed":
                return
            if kind == "error":  # a message that is not what the protocol allows: every rank stops on it
                verdict = self.transport.run(protocol.declare(link, verdict)).verdict
        except dist.DistError as exc:  # the store went away: the job is over anyway
            log.info("watcher of group %s ends: %s", link.m.group, exc)
            return
        except Exception as exc:  # an unreadable verdict, or a bug of ours: this rank must stay stoppable
            log.exception("watcher of group %s failed; stopping this rank and its peers", link.m.group)
            verdict = Verdict(
                error="ProtocolError",
                kind="watcher_failed",
                fields=[],
                text=f"agreement: rank {link.m.rank}'s watcher failed: {type(exc).__name__}: {exc}",
            )
            with contextlib.suppress(Exception):  # on a fresh connection: this one may be mid-operation
                verdict = Transport(self.transport.store).run(protocol.declare(link, verdict)).verdict
        with self._lock:
            waiting = self._waiting
        if (waiting and self._raised.wait(DEFER_S)) or self._raised.is_set():
            return  # the main thread raised it in its own wait
        self.stop(verdict)

    def stop(self, verdict: Verdict) -> None:
        """Stop this rank now, wherever its main thread is (inside a collective, say)."""
        error, m = error_of(verdict), self.link.m
        announce(verdict, detector=m.rank, group=m.group, ranks=m.ranks, event=self.event)
        head, _, rest = verdict.text.partition("\n")
        abort(error(f"{head} (stopped by rank {verdict.by}'s verdict)\n{rest}"), self.exit_status)

    def join(self) -> None:
        """Wait for the watcher to end (after protocol.close posted it "closed")."""
        self._thread.join(timeout=5.0)
