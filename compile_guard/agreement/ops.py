"""The agreement protocol's only contact with the world: store operations, yielded one at a time.

Every protocol actor (compile_guard.agreement.protocol) is a generator that yields these ops
and gets each one's result back; it has no thread, no socket and no clock of its own (even the
time is an op). Two transports run the same actors:
- compile_guard.agreement.channel executes each op on the job's c10d store (TCPStore), in the
  rank's main thread or its watcher thread;
- the simulation (tests/protocol_sim.py) executes them on an in-memory store and interleaves
  the ops of N simulated ranks in random orders, with virtual time.

Mailboxes: a rank's inbox is a counter plus numbered entries. A sender takes a number with an
atomic add, then writes the entry; the owner reads its entries in order and deletes each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Generator

from compile_guard.agreement.messages import Message, parse

MAX_ENTRY_BYTES = 64 * 1024  # one statement, ledger entry or message; a longer schedule is cut before publishing


class ChannelError(Exception):
    """A peer's entry that is not what the protocol allows (too large, not JSON, not an object)."""


@dataclass(frozen=True)
class Set:
    key: str
    value: bytes


@dataclass(frozen=True)
class Get:
    """The value, or None when the key is absent (never blocks)."""

    key: str


@dataclass(frozen=True)
class Add:
    """Atomically add to a counter key (absent = 0); the new value."""

    key: str
    amount: int


@dataclass(frozen=True)
class CompareSet:
    """Set `key` to `desired` if it holds `expected` (b"" = absent); the value that stands."""

    key: str
    expected: bytes
    desired: bytes


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class Wait:
    """Block until every key exists (True) or `timeout_s` passes (False)."""

    keys: tuple[str, ...]
    timeout_s: float


@dataclass(frozen=True)
class Now:
    """The transport's monotonic time in seconds (virtual in the simulation)."""


Op = Set | Get | Add | CompareSet | Delete | Wait | Now
Actor = Generator[Op, Any, Any]


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


def read(key: str, *, what: str) -> Actor:
    """The JSON object at `key`, or None when absent."""
    data = yield Get(key)
    return None if data is None else decode(data, what=what)


def post(box: str, message: Message) -> Actor:
    """Append `message` to the inbox `box` (any rank, any thread)."""
    number = yield Add(f"{box}/n", 1)
    yield Set(f"{box}/{number}", encode(message.to_json(), what=f"a message to {box}"))


class Inbox:
    """The reading end of one mailbox; owned by one thread of one rank."""

    def __init__(self, box: str) -> None:
        self.box = box
        self.next = 1  # the number of the next message to read

    def receive(self, timeout_s: float) -> Actor:
        """The next message (compile_guard.agreement.messages), waiting up to `timeout_s` for it (0: only look);
        None when none came."""
        key = f"{self.box}/{self.next}"
        data = yield Get(key)
        if data is None and timeout_s > 0 and (yield Wait((key,), timeout_s)):
            data = yield Get(key)
        if data is None:
            # A sender that took a number and died before writing it leaves a hole: step over it once
            # the counter has moved past it and a whole wait found nothing.
            if timeout_s > 0 and (yield Add(f"{self.box}/n", 0)) > self.next:
                self.next += 1
            return None
        yield Delete(key)
        self.next += 1
        return parse(decode(data, what=f"message {self.next - 1} of {self.box}"))
