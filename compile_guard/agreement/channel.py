"""The side channel ranks agree over: the job's c10d store, never a collective of the job.

A store key can never interleave with the job's own collectives (it is not on any process
group), and every value is canonical JSON with a size limit — data, never code. `Transport`
executes the protocol's store ops (compile_guard.agreement.ops) on one connection; each thread
that waits gets its own (`Store.clone`): a TCPStore client serialises its operations, so a
watcher blocked in `wait` must not share the client the main thread publishes on.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import torch.distributed as dist

from compile_guard import compat
from compile_guard.agreement.ops import Actor, Add, CompareSet, Delete, Get, Now, Set, Wait

# compare_set with an expected value no entry can hold returns the current value, or this when the key is
# absent: a get that never blocks, in one round trip (a TCPStore get on an absent key waits for it).
_ABSENT = b"\x00compile_guard:absent\x00"


class Transport:
    """Runs protocol actors on one store connection (one thread's)."""

    def __init__(self, store: dist.Store) -> None:
        self.store = compat.clone_store(store)
        self.ops = 0  # store round trips so far (the scale benchmark reads it)

    def execute(self, op: Any) -> Any:
        if isinstance(op, Now):
            return time.monotonic()
        self.ops += 1
        store = self.store
        if isinstance(op, Get):
            value = store.compare_set(op.key, _ABSENT, _ABSENT)
            return None if value == _ABSENT else value
        if isinstance(op, Set):
            return store.set(op.key, op.value)
        if isinstance(op, Add):
            return store.add(op.key, op.amount)
        if isinstance(op, CompareSet):
            return store.compare_set(op.key, op.expected, op.desired)
        if isinstance(op, Delete):
            return store.delete_key(op.key)
        if isinstance(op, Wait):
            try:
                store.wait(list(op.keys), datetime.timedelta(seconds=op.timeout_s))
                return True
            except dist.DistStoreError:  # the slice ran out: the actor decides what that means
                return False
        raise AssertionError(f"not a store op: {op!r}")

    def run(self, actor: Actor) -> Any:
        """Drive `actor` to its end; its return value."""
        result = None
        while True:
            try:
                op = actor.send(result)
            except StopIteration as done:
                return done.value
            result = self.execute(op)
