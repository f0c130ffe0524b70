"""Envelope v1 over a broadcast group (TP): rank0 sends, every other rank receives.

Sender: preflight in the contract's order — schema → manifest → meta encode → wire
dtypes → materialise — and only then the commitment point: header, meta, tensors in
manifest order. A failed preflight raises PreflightError on rank0 with the IDs and the key
path; no peer has seen anything, so the next valid request still works.

Receiver: header → reject unknown action/version and non-monotonic IDs → meta → plan
validation → allocate from the manifest → tensors. A plan the receiver rejects is still
*drained* (all tensors received) so the streams stay aligned; the rejection is then
agreed on by every rank before the first generator collective (engine.topology.tp).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from engine import events
from engine.collectives import broadcast, isend, recv
from engine.config import ModelConfig
from engine.control.envelope import (
    HEADER_LEN,
    Action,
    Header,
    TensorSpec,
    check_wire_dtypes,
    decode_header,
    decode_meta,
    encode_meta,
    spec_of,
)
from engine.control.plan import GeneratorPlan, PlanError, validate_plan
from engine.control.watchdog import Watchdog
from engine.errors import AdHocCollective, PreflightError, ProtocolError
from engine.hooks import Hooks, Point, at

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ChunkRequest:
    chunk_index: int  # -1 = warmup
    plan: dict[str, Any]  # raw plan JSON, validated at preflight
    tensors: dict[str, torch.Tensor]  # by key; one tensor per key in v1
    extras: dict[str, Any] = field(default_factory=dict)  # free-form JSON for the workers' logs


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """One INFER message as every rank holds it after the transfer."""

    header: Header
    plan: GeneratorPlan | None  # None when the receiver rejected it
    tensors: dict[str, torch.Tensor]
    rejection: str | None = None  # why this rank rejected the plan


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A request that passed every preflight stage: nothing left to fail before sending."""

    header: Header
    plan: GeneratorPlan | None  # None for a RESULT
    meta: bytes
    specs: list[TensorSpec]  # the manifest, sorted by (key, index)
    tensors: list[torch.Tensor]  # materialised, in manifest order

    def envelope(self) -> Envelope:
        """The sender's own copy of what the receivers will hold."""
        return Envelope(
            header=self.header,
            plan=self.plan,
            tensors={s.key: t for s, t in zip(self.specs, self.tensors, strict=True)},
        )


class BroadcastChannel:
    """TP: the driver broadcasts, every other rank of the group receives the same bytes."""

    def __init__(self, *, group: dist.ProcessGroup, name: str, src: int) -> None:
        self.group, self.name, self.src = group, name, src

    def put(self, t: torch.Tensor) -> None:
        broadcast(t, src=self.src, group=self.group)

    def get(self, t: torch.Tensor) -> torch.Tensor:
        return broadcast(t, src=self.src, group=self.group)


class P2PChannel:
    """PP: one stage sends to the next, point to point (each direction is its own channel).

    Sends are posted without waiting (the stages send to each other, and two blocking sends
    would wait on each other); the channel keeps each tensor alive until its send completes,
    in order, and `drain()` waits for all of them.
    """

    def __init__(self, *, group: dist.ProcessGroup, name: str, peer: int) -> None:
        self.group, self.name, self.peer = group, name, peer
        self._pending: collections.deque = collections.deque()  # (work, tensor), oldest first

    def put(self, t: torch.Tensor) -> None:
        while self._pending and self._pending[0][0].is_completed():
            self._pending.popleft()[0].wait()  # surfaces an error of a completed send
        self._pending.append((isend(t, dst=self.peer, group=self.group), t))

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft()[0].wait()

    def get(self, t: torch.Tensor) -> torch.Tensor:
        return recv(t, src=self.peer, group=self.group)


Channel = BroadcastChannel | P2PChannel


class EnvelopeSender:
    def __init__(self, *, cfg: ModelConfig, channel: Channel, device: torch.device) -> None:
        self.cfg, self.channel, self.device = cfg, channel, device
        self.group_name = channel.name
        self._next_call_id = 0
        self._last_chunk_index = -2  # warmup (-1) may come first
        self.cache_epoch = 0
        self.control_epoch = 0

    def _ids(self, call_id: int, chunk_index: int, cache_epoch: int) -> dict[str, Any]:
        return {"call_id": call_id, "chunk_index": chunk_index, "cache_epoch": cache_epoch, "group": self.group_name}

    def preflight(self, req: ChunkRequest) -> Prepared:
        """Everything that can throw, before the commitment point. Raises PreflightError."""
        call_id = self.next_call_id()  # a rejected request burns its id: IDs stay strictly increasing
        epoch = self.cache_epoch + 1 if req.plan.get("init_cache") is True else self.cache_epoch
        ids = self._ids(call_id, req.chunk_index, epoch)
        try:
            if req.chunk_index <= self._last_chunk_index:
                raise PreflightError("schema", "chunk_index", f"{req.chunk_index} <= previous {self._last_chunk_index}")
            # 1. schema (plan fields, tensor keys and shapes, plan invariants)
            specs = [spec_of(key, 0, t) for key, t in req.tensors.items()]
            try:
                plan = GeneratorPlan.from_json(req.plan)
                validate_plan(plan, specs, self.cfg)
            except PlanError as exc:
                raise PreflightError("schema", exc.key_path, exc.detail) from None
            # 2. manifest, sorted by (key, index)
            specs.sort(key=lambda s: (s.key, s.index))
            # 3. meta encode (canonical JSON; names the key path of anything that is not JSON)
            meta = encode_meta(req.plan, req.extras, specs)
            # 4. wire dtypes
            check_wire_dtypes(specs)
            # 5. materialise: device and contiguity now, so the send loop cannot fail on them
            tensors = [req.tensors[s.key].to(self.device).contiguous() for s in specs]
        except PreflightError as exc:
            events.emit("preflight_rejected", stage=exc.stage, key_path=exc.key_path, detail=exc.detail, **ids)
            log.error("preflight rejected call_id=%s chunk_index=%s: %s", call_id, req.chunk_index, exc)
            raise
        header = Header(
            action=Action.INFER,
            call_id=call_id,
            chunk_index=req.chunk_index,
            cache_epoch=epoch,
            control_epoch=self.control_epoch,
            meta_len=len(meta),
            tensor_count=len(specs),
        )
        return Prepared(header=header, plan=plan, meta=meta, specs=specs, tensors=tensors)

    def prepare_result(
        self, *, chunk_index: int, cache_epoch: int, stats: dict[str, Any], tensors: dict[str, torch.Tensor]
    ) -> Prepared:
        """A RESULT message (PP0 return channel): the same framing, stats in `extras`."""
        specs = sorted((spec_of(k, 0, t) for k, t in tensors.items()), key=lambda s: (s.key, s.index))
        meta = encode_meta({}, stats, specs)
        check_wire_dtypes(specs)
        header = Header(
            action=Action.RESULT,
            call_id=self.next_call_id(),
            chunk_index=chunk_index,
            cache_epoch=cache_epoch,
            control_epoch=self.control_epoch,
            meta_len=len(meta),
            tensor_count=len(specs),
        )
        materialised = [tensors[s.key].to(self.device).contiguous() for s in specs]
        return Prepared(header=header, plan=None, meta=meta, specs=specs, tensors=materialised)

    def send_header(self, header: Header) -> None:
        """The commitment point: after this, peers block until the whole envelope arrives."""
        events.emit(
            "commit",
            point="header",
            action=header.action.name,
            **self._ids(header.call_id, header.chunk_index, header.cache_epoch),
        )
        self.channel.put(header.to_tensor().to(self.device))
        if header.action is Action.INFER:
            self._last_chunk_index = header.chunk_index
            self.cache_epoch = header.cache_epoch
        elif header.action is Action.RESULT:
            self._last_chunk_index = header.chunk_index

    def send_payload(self, meta: bytes, specs: list[TensorSpec], tensors: list[torch.Tensor]) -> None:
        payload = torch.frombuffer(bytearray(meta), dtype=torch.uint8).to(self.device)
        self.channel.put(payload)
        for spec, tensor in zip(specs, tensors, strict=True):
            self.send_tensor(spec, tensor, manifest=specs)

    def send_tensor(self, spec: TensorSpec, tensor: torch.Tensor, *, manifest: list[TensorSpec]) -> None:
        """Broadcast one manifest tensor; anything else is stopped *before* the collective."""
        if spec not in manifest or spec_of(spec.key, spec.index, tensor) != spec:
            events.emit(
                "adhoc_blocked",
                key=spec.key,
                index=spec.index,
                group=self.group_name,
                manifest=[[s.key, s.index] for s in manifest],
            )
            raise AdHocCollective(
                f"broadcast of {spec.key}[{spec.index}] {spec_of(spec.key, spec.index, tensor).dtype}"
                f"{list(tensor.shape)} is not in the envelope's manifest {[(s.key, s.index) for s in manifest]};"
                " every cross-rank tensor must travel in an envelope (receivers allocate from the manifest)"
            )
        self.channel.put(tensor)

    def next_call_id(self) -> int:
        """Take the next call_id (strictly increasing over every action this sender sends)."""
        self._next_call_id += 1
        return self._next_call_id - 1

    def control(self, action: Action) -> Header:
        """A payload-less header (NOOP heartbeat, SHUTDOWN), sent at once."""
        header = Header(
            action=action,
            call_id=self.next_call_id(),
            chunk_index=max(self._last_chunk_index, -1),
            cache_epoch=self.cache_epoch,
            control_epoch=self.control_epoch,
        )
        self.send_header(header)
        return header


class EnvelopeReceiver:
    def __init__(
        self,
        *,
        cfg: ModelConfig,
        channel: Channel,
        device: torch.device,
        rank: int,
        watchdog: Watchdog | None,  # None where the stream never idles (a result channel)
        hooks: Hooks,
        accept: frozenset[Action] = frozenset({Action.NOOP, Action.INFER, Action.SHUTDOWN, Action.ERROR}),
    ) -> None:
        self.accept = accept  # actions this stream may carry; RESULT only on a return channel
        self.cfg, self.channel, self.device = cfg, channel, device
        self.group_name = channel.name
        self.rank, self.watchdog, self.hooks = rank, watchdog, hooks
        self.last_call_id = -1
        self.last_chunk_index = -2
        self.cache_epoch = 0

    def recv_header(self, *, window_s: float | None = None) -> Header:
        """The next header; the watchdog expects it within `window_s` (default: its own window)."""
        raw = torch.empty(HEADER_LEN, dtype=torch.int64, device=self.device)
        if self.watchdog is not None:
            self.watchdog.arm(window_s)
        self.channel.get(raw)
        header = decode_header(raw.cpu())
        if self.watchdog is not None:
            self.watchdog.header_seen(header.ids())
        if header.action not in self.accept:
            raise ProtocolError(f"{header.action.name} is not allowed on channel {self.group_name}")
        if header.call_id <= self.last_call_id:
            raise ProtocolError(f"call_id {header.call_id} <= previous {self.last_call_id}: duplicated or replayed")
        self.last_call_id = header.call_id
        if header.action in (Action.INFER, Action.RESULT):
            if header.chunk_index <= self.last_chunk_index:
                raise ProtocolError(f"chunk_index {header.chunk_index} <= previous {self.last_chunk_index}")
            self.last_chunk_index = header.chunk_index
        return header

    def recv_envelope(self, header: Header) -> Envelope:
        """Meta and tensors of an INFER header; a rejected plan is still fully drained."""
        raw = torch.empty(header.meta_len, dtype=torch.uint8, device=self.device)
        self.channel.get(raw)
        plan_raw, _extras, specs = decode_meta(bytes(raw.cpu().numpy()), header.tensor_count)
        ids = {**header.ids(), "group": self.group_name, "rank": self.rank}
        plan_raw = at(self.hooks, Point.PLAN_RECEIVED, rank=self.rank, chunk_index=header.chunk_index, plan=plan_raw)[
            "plan"
        ]
        plan, rejection = None, None
        try:
            plan = GeneratorPlan.from_json(plan_raw)
            validate_plan(plan, specs, self.cfg)
            if plan.init_cache != (header.cache_epoch > self.cache_epoch) or header.cache_epoch < self.cache_epoch:
                raise PlanError(
                    "header.cache_epoch",
                    f"{header.cache_epoch} after {self.cache_epoch} with init_cache={plan.init_cache};"
                    " only a hard cut (init_cache) may bump the epoch, and it must",
                )
        except PlanError as exc:
            plan, rejection = None, str(exc)
            events.emit("plan_rejected", reason=rejection, **ids)
            log.error("rank %s rejects call_id=%s: %s", self.rank, header.call_id, rejection)
        tensors = {}
        for spec in specs:  # drained even when rejected: the sender is already sending them
            tensors[spec.key] = self.channel.get(spec.allocate(self.device))
        self.cache_epoch = max(self.cache_epoch, header.cache_epoch)
        return Envelope(header=header, plan=plan, tensors=tensors, rejection=rejection)

    def recv_result(self, header: Header) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Stats and tensors of a RESULT header, allocated strictly from its manifest."""
        raw = torch.empty(header.meta_len, dtype=torch.uint8, device=self.device)
        self.channel.get(raw)
        _plan, stats, specs = decode_meta(bytes(raw.cpu().numpy()), header.tensor_count)
        return stats, {spec.key: self.channel.get(spec.allocate(self.device)) for spec in specs}
