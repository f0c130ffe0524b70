"""The eager-collective ledger (opt-in): ranks agree on every eager c10d call before it is issued.

    with CollectiveLedger(groups=[tp_group]):   # or check --eager-ledger
        serve()

While it is on, `torch.distributed`'s group collectives (all_reduce, broadcast, all_gather,
all_gather_into_tensor, reduce_scatter_tensor, all_to_all_single, reduce, barrier) are wrapped:
before call n on a watched group, the rank publishes entry n — op, group (name and ranks),
shapes, dtype, reduce op or root, the caller's site — and waits for every peer's entry n
(compile_guard.agreement.holds.hold_entry). Entries that differ are a CollectiveMismatch raised
*before* the call, so the divergent collective never runs (gloo would abort on a size mismatch,
NCCL hang or reduce garbage). A peer that has not issued entry n yet is late — an idle server
waiting for its next request is healthy — and is waited for until the stall rule (no progress for
`stall_s`, by default a margin under the group's timeout): then every rank's position is reported
and every rank stops. Calls through a name bound before the ledger was installed (`from
torch.distributed import all_reduce`) are not seen; calls through `dist.<op>` are.

Unlike TORCH_DISTRIBUTED_DEBUG=DETAIL it adds no collective (a few store round trips per call),
names the caller's source line, and can be switched on for one group in a running job.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import sys
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from compile_guard import compat
from compile_guard.agreement import holds, protocol
from compile_guard.agreement.channel import Transport
from compile_guard.agreement.entries import Verdict
from compile_guard.agreement.ops import ChannelError
from compile_guard.agreement.positions import Positions
from compile_guard.agreement.watcher import RANK_POSITIONS, Watcher, answer_window_s, default_stall_s, describe_main
from compile_guard.health.sites import relative_site

OPS = (
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter_tensor",
    "all_to_all_single",
    "reduce",
    "barrier",
)
_INSTANCES = itertools.count()
_SKIP = (__file__, torch.__file__.rsplit("/", 1)[0])


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    return str(value)  # a ReduceOp, say


def _site(depth: int = 3) -> str:
    """The innermost frames outside torch and this module: 'where < its caller < ...' (a wrapper module such
    as engine/collectives.py, then the model line that called it)."""
    frame, sites = sys._getframe(1), []
    while frame is not None and len(sites) < depth:
        if not frame.f_code.co_filename.startswith(_SKIP):
            sites.append(relative_site(frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return " < ".join(sites) or "?"


class CollectiveLedger:
    """Agree on every eager collective issued on `groups` (default: the world group) while installed."""

    def __init__(
        self,
        *,
        groups: list[dist.ProcessGroup] | None = None,
        stall_s: float | None = None,
        store: dist.Store | None = None,
    ) -> None:
        self.rank = dist.get_rank()
        self.groups = {g.group_name: g for g in (groups or [dist.group.WORLD])}
        timeout_s = min(compat.group_timeout_s(g) for g in self.groups.values())
        self.stall_s = default_stall_s(timeout_s) if stall_s is None else stall_s
        if not 0 < self.stall_s <= 24 * 3600:
            raise ValueError(
                f"stall_s={stall_s} is invalid; expected seconds > 0 (default: under the groups'"
                f" {timeout_s:.0f}s timeout)"
            )
        store = store if store is not None else compat.default_store()
        ranks = tuple(sorted({r for g in self.groups.values() for r in dist.get_process_group_ranks(g)}))
        member = protocol.Member(
            rank=self.rank,
            ranks=ranks,
            group=",".join(self.groups),
            stall_s=self.stall_s,
            prefix=f"compile_guard/ledger{next(_INSTANCES)}",
            probe_s=min(2.0, self.stall_s / 10),
            answer_s=answer_window_s(self.stall_s, timeout_s),
            describe=describe_main,
        )
        self.positions = Positions(self.rank, siblings=RANK_POSITIONS)
        self.link = protocol.Link(member, self.positions)
        self.transport = Transport(store)
        self.watcher = Watcher(store, self.link, event="collective_mismatch")
        self._peers = {
            name: [r for r in dist.get_process_group_ranks(g) if r != self.rank] for name, g in self.groups.items()
        }
        self._originals: dict[str, Callable] = {}
        self._active = False  # the ledger's own work is never recorded

    @property
    def calls(self) -> dict[str, int]:
        """Entries issued so far per group."""
        return {name: self.positions.entries.get(name, 0) for name in self.groups}

    def install(self) -> CollectiveLedger:
        for op in OPS:
            original = getattr(dist, op)
            self._originals[op] = original
            setattr(dist, op, self._wrap(op, original))
        return self

    def _wrap(self, op: str, original: Callable) -> Callable:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if not self._active:
                bound = signature.bind(*args, **kwargs)
                group = bound.arguments.get("group") or dist.group.WORLD
                if group.group_name in self.groups:
                    self._agree(op, group, bound.arguments)
            return original(*args, **kwargs)

        return recorded

    def _entry(self, op: str, group: dist.ProcessGroup, arguments: dict[str, Any]) -> dict[str, Any]:
        fields = {
            k: _describe(v) for k, v in arguments.items() if k not in ("group", "async_op", "group_src", "group_dst")
        }
        return {
            "op": op,
            "group": {"name": group.group_name, "ranks": dist.get_process_group_ranks(group)},
            "args": fields,
            "site": _site(),
        }

    def _agree(self, op: str, group: dist.ProcessGroup, arguments: dict[str, Any]) -> None:
        self._active = True
        try:
            name = group.group_name
            n = self.positions.entries.get(name, 0)
            mine = {"n": n, "rank": self.rank, **self._entry(op, group, arguments)}
            with self.watcher.waiting():
                try:
                    out = self.transport.run(holds.hold_entry(self.link, name, n, mine, self._peers[name]))
                except ChannelError as exc:  # a peer's entry that is not what the protocol allows
                    out = self.transport.run(
                        protocol.declare(
                            self.link,
                            Verdict.bad_entry(f"eager-collective ledger: {exc}", entry=n),
                        )
                    )
                if out is not None:
                    self.watcher.raise_verdict(out.verdict)
        finally:
            self._active = False

    def close(self) -> None:
        for op, original in self._originals.items():
            setattr(dist, op, original)
        self._originals.clear()
        try:
            self.transport.run(protocol.close(self.link))
        except (dist.DistError, RuntimeError):  # the store is gone: the watcher ends on its own error
            pass
        self.watcher.join()
        self.positions.leave()

    def __enter__(self) -> CollectiveLedger:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def ledger_on(enabled: bool, *, groups: list[dist.ProcessGroup]) -> Iterator[CollectiveLedger | None]:
    """`with ledger_on(job.agreement.eager_ledger, groups=[...])`: the ledger while the block runs, when enabled."""
    if not enabled:
        yield None
        return
    with CollectiveLedger(groups=groups) as ledger:
        yield ledger
