"""The side channel ranks agree over: the job's c10d store, never a collective of the job.

A store key can never interleave with the job's own collectives (it is not on any process
group), every read has its own short deadline, and every value is canonical JSON with a size
limit — data, never code. Keys live under one prefix per agreement (group name + purpose):

    <prefix>/s/<n>/<rank>   what `rank` states as its n-th entry (a compiled graph, a collective)
    <prefix>/busy/<rank>    a compile id while `rank` is inside a dynamo compile, "" otherwise
    <prefix>/verdict        the first divergence found (compare-and-set: one writer wins)
    <prefix>/wake/<rank>    set to wake `rank`'s watcher: "verdict", or "closed" when it shuts down

Each thread that waits gets its own connection (`Store.clone`): a TCPStore client serialises
its operations, so a watcher blocked in `wait` must not share the client the rank publishes on.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import torch.distributed as dist

MAX_ENTRY_BYTES = 64 * 1024  # one statement or ledger entry; a schedule longer than this is cut before publishing


class ChannelError(Exception):
    """A peer's entry that is not what the protocol allows (too large, not JSON, not an object)."""


def default_store() -> dist.Store:
    """The store the job's default group was initialised with (torchrun's, or our launcher's)."""
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def encode(value: dict[str, Any], *, what: str) -> bytes:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    if len(data) > MAX_ENTRY_BYTES:
        raise ChannelError(f"{what} is {len(data)} bytes, over the {MAX_ENTRY_BYTES}-byte limit")
    return data


def decode(data: bytes, *, what: str) -> dict[str, Any]:
    """A peer's bytes as a JSON object; ChannelError naming the entry otherwise (never a hang, never code)."""
    if len(data) > MAX_ENTRY_BYTES:
        raise ChannelError(f"{what} is {len(data)} bytes, over the {MAX_ENTRY_BYTES}-byte limit")
    try:
        value = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChannelError(f"{what} is not JSON ({type(exc).__name__}: {exc}); {data[:60]!r}...") from None
    if not isinstance(value, dict):
        raise ChannelError(f"{what} is a JSON {type(value).__name__}, expected an object")
    return value


class SideChannel:
    """One connection to the store under one prefix."""

    def __init__(self, store: dist.Store, *, prefix: str) -> None:
        self.store = store.clone()
        self.prefix = prefix

    def key(self, *parts: object) -> str:
        return "/".join((self.prefix, *(str(p) for p in parts)))

    def publish(self, n: int, rank: int, value: dict[str, Any], *, what: str) -> None:
        self.store.set(self.key("s", n, rank), encode(value, what=what))

    def has(self, *parts: object) -> bool:
        return self.store.check([self.key(*parts)])

    def read(self, n: int, rank: int, *, what: str) -> dict[str, Any] | None:
        if not self.has("s", n, rank):
            return None
        return decode(self.store.get(self.key("s", n, rank)), what=what)

    def wait_for(self, n: int, rank: int, timeout_s: float) -> bool:
        """Block up to `timeout_s` for rank's n-th entry; True once it is there."""
        try:
            self.store.wait([self.key("s", n, rank)], datetime.timedelta(seconds=timeout_s))
            return True
        except dist.DistStoreError:  # the slice ran out: the caller decides what that means
            return False

    def set_busy(self, rank: int, compile_id: str) -> None:
        self.store.set(self.key("busy", rank), compile_id)

    def busy(self, rank: int) -> str:
        """The compile id rank is compiling now, or "" (never set counts as not compiling)."""
        return self.store.get(self.key("busy", rank)).decode() if self.has("busy", rank) else ""

    def verdict(self) -> dict[str, Any] | None:
        if not self.has("verdict"):
            return None
        return decode(self.store.get(self.key("verdict")), what="the verdict")

    def declare(self, verdict: dict[str, Any], ranks: tuple[int, ...]) -> dict[str, Any]:
        """Write the verdict unless one is there; wake every rank's watcher; return the verdict that stands."""
        data = encode(verdict, what="the verdict")
        standing = self.store.compare_set(self.key("verdict"), "", data)
        for rank in ranks:
            self.store.set(self.key("wake", rank), "verdict")
        return decode(standing, what="the verdict")

    def wake(self, rank: int, why: str) -> None:
        self.store.set(self.key("wake", rank), why)

    def wait_wake(self, rank: int, timeout_s: float) -> str | None:
        """Block until rank's wake key is set (its value) or `timeout_s` passes (None)."""
        try:
            self.store.wait([self.key("wake", rank)], datetime.timedelta(seconds=timeout_s))
        except dist.DistStoreError:
            return None
        return self.store.get(self.key("wake", rank)).decode()


def now() -> float:
    return time.monotonic()
