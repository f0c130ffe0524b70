"""rank0's drive loop, shared by the topologies: warmup, the stream, idle heartbeats, SHUTDOWN.

Per chunk: build the request, preflight it (a rejected request never reaches a header: the
job goes on), send header and payload — the commitment point —, then hand the envelope to
whoever generates it (`produce`: the local TP executor, or the PP1 mesh leader over
point-to-point) and decode what comes back. PP0's stage 0 pipelines envelopes instead of
waiting for each result: it uses `prepare` and `commit` (timing each) and schedules the rest
itself.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import torch

from engine import knobs
from engine.control.envelope import Action
from engine.control.stream import StreamBuilder
from engine.control.transport import EnvelopeSender, Prepared
from engine.errors import PreflightError
from engine.hooks import Hooks, Point, at


class Driver:
    def __init__(
        self,
        *,
        sender: EnvelopeSender,
        builder: StreamBuilder,
        hooks: Hooks,
        rank: int,
        decoder: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        self.sender, self.builder, self.hooks, self.rank = sender, builder, hooks, rank
        self.decoder = decoder  # rank0's decode stage (pixels for the client); None: stage 0 decodes itself
        self.rejected: list[dict[str, Any]] = []  # requests preflight refused (nobody saw a header)
        self.done: list[int] = []  # chunks decoded, in order

    def send(self, k: int) -> Prepared | None:
        """Preflight and send chunk k's envelope; None when preflight refused it (the job goes on)."""
        try:
            prepared = self.prepare(k)
        except PreflightError as exc:  # nobody saw a header for it
            self.rejected.append({"chunk_index": k, "stage": exc.stage, "key_path": exc.key_path})
            return None
        self.commit(k, prepared)
        return prepared

    def prepare(self, k: int) -> Prepared:
        """Chunk k's request, preflighted (PreflightError before any header)."""
        return self.sender.preflight(self.builder.request(k))

    def commit(self, k: int, prepared: Prepared) -> None:
        """The commitment point: header, then payload; the stream moves on."""
        self.sender.send_header(prepared.header)
        at(self.hooks, Point.HEADER_SENT, rank=self.rank, chunk_index=k)
        self.sender.send_payload(prepared.meta, prepared.specs, prepared.tensors)
        self.builder.committed()
        at(self.hooks, Point.PAYLOAD_SENT, rank=self.rank, chunk_index=k, sender=self.sender, manifest=prepared.specs)

    def settle(self, k: int, clean: torch.Tensor) -> None:
        """Chunk k's clean latents came back: decode, and feed the next recompute's context."""
        if self.decoder is not None:
            self.decoder(clean)
        if k < 0:
            self.builder.restart(new_stream=False)
        else:
            self.builder.context(clean)
            self.done.append(k)

    def idle(self, k: int, seconds: float) -> None:
        """Heartbeats for `seconds`: workers' watchdogs see a live driver."""
        pace, t_end = threading.Event(), time.monotonic() + seconds
        while time.monotonic() < t_end:
            at(self.hooks, Point.IDLE_TICK, rank=self.rank, chunk_index=k)
            self.sender.control(Action.NOOP)
            pace.wait(knobs.read("COMPILE_GUARD_HEARTBEAT_S"))  # pacing heartbeats, not synchronising

    def run(
        self,
        *,
        chunks: int,
        produce: Callable[[int, Prepared], torch.Tensor],
        idle_after: int = -1,
        idle_s: float = 0.0,
    ) -> dict[str, Any]:
        """Lockstep: warmup (chunk -1), then chunks 0..chunks-1, each produced before the next is sent."""
        for k in [-1, *range(chunks)]:
            prepared = self.send(k)
            if prepared is None:
                continue
            self.settle(k, produce(k, prepared))
            if k == idle_after:
                self.idle(k, idle_s)
        self.sender.control(Action.SHUTDOWN)
        return {"chunks_done": self.done, "rejected": self.rejected}
