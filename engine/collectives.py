"""Every collective the engine issues goes through this module.

Compile-aware dispatch: eager code uses in-place c10d collectives; code being traced by
dynamo uses functional collectives, which dynamo keeps *inside* the graph (no break).
The `disabled_inplace` path wraps the in-place call in `torch.compiler.disable()` — what
people write when a collective "breaks compile" — and exists so the repro can show the
graph cliff it causes. Every call takes its group from the object, never a default.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol


class CollectivePath(str, enum.Enum):
    AUTO = "auto"  # functional while dynamo traces, in-place otherwise
    INPLACE = "eager_inplace"  # c10d in-place; breaks a graph if reached while tracing
    FUNCTIONAL = "functional"  # traceable; stays inside the compiled graph
    DISABLED = "disabled_inplace"  # in-place behind torch.compiler.disable(): the cliff


def _inplace_all_reduce(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x


_disabled_all_reduce = torch.compiler.disable(_inplace_all_reduce)


@dataclass(frozen=True, kw_only=True)
class TPCollectives:
    """The collectives of one TP group. `group=None` means tp=1: every op is identity."""

    group: dist.ProcessGroup | None  # the TP group; None only when tp == 1
    path: CollectivePath = CollectivePath.AUTO  # how all-reduce is issued

    def __post_init__(self) -> None:
        if not isinstance(self.path, CollectivePath):
            raise ValueError(f"path={self.path!r} is invalid; pick one of {[p.value for p in CollectivePath]}")

    @property
    def size(self) -> int:
        return 1 if self.group is None else dist.get_world_size(self.group)

    def resolved_path(self) -> CollectivePath:
        """The path a call takes right now (AUTO depends on whether dynamo is tracing)."""
        if self.path is not CollectivePath.AUTO:
            return self.path
        if torch.compiler.is_compiling():
            return CollectivePath.FUNCTIONAL
        return CollectivePath.INPLACE

    def effective_path(self, *, compiled: bool) -> CollectivePath:
        """The path calls take inside a region that is (or is not) compiled."""
        if self.group is None:
            return CollectivePath.INPLACE  # tp=1: no collective is issued at all
        if self.path is not CollectivePath.AUTO:
            return self.path
        return CollectivePath.FUNCTIONAL if compiled else CollectivePath.INPLACE

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the TP group. `x` must be an intermediate the caller owns."""
        if self.group is None:
            return x
        path = self.resolved_path()
        if path is CollectivePath.FUNCTIONAL:
            return funcol.all_reduce(x, "sum", self.group)
        if path is CollectivePath.DISABLED:
            return _disabled_all_reduce(x, self.group)
        return _inplace_all_reduce(x, self.group)


def broadcast(x: torch.Tensor, *, src: int, group: dist.ProcessGroup) -> torch.Tensor:
    """In-place broadcast of `x` from global rank `src` over `group` (control plane only)."""
    dist.broadcast(x, src=src, group=group)
    return x


def isend(x: torch.Tensor, *, dst: int, group: dist.ProcessGroup) -> dist.Work:
    """Non-blocking point-to-point send of `x` to global rank `dst` (PP stage boundaries only).

    Non-blocking because the two stages send to each other: two blocking sends that wait
    for each other's receive would deadlock. `x` must stay alive until the work completes.
    """
    return dist.isend(x, dst=dst, group=group)


def recv(x: torch.Tensor, *, src: int, group: dist.ProcessGroup) -> torch.Tensor:
    """Point-to-point receive into `x` from global rank `src`."""
    dist.recv(x, src=src, group=group)
    return x


def barrier(*, group: dist.ProcessGroup) -> None:
    dist.barrier(group=group)


def all_gather_json(obj: Any, *, group: dist.ProcessGroup, device: torch.device) -> list[Any]:
    """Gather one JSON-able object from every rank of `group`, in group-rank order.

    Bytes are canonical JSON, never pickle (all_gather_object unpickles peer bytes).
    Two collectives: lengths, then the payload padded to the longest.
    """
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    size = dist.get_world_size(group)
    length = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    lengths = [torch.zeros_like(length) for _ in range(size)]
    dist.all_gather(lengths, length, group=group)
    longest = max(int(n.item()) for n in lengths)
    buf = torch.zeros(longest, dtype=torch.uint8, device=device)
    buf[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    bufs = [torch.zeros_like(buf) for _ in range(size)]
    dist.all_gather(bufs, buf, group=group)
    return [json.loads(bytes(b[: int(n.item())].cpu().tolist()).decode()) for b, n in zip(bufs, lengths, strict=True)]
