"""The eager-collective ledger (opt-in): ranks agree on every eager c10d call before it is issued.

    with CollectiveLedger(groups=[tp_group]):   # or check --eager-ledger
        serve()

While it is on, `torch.distributed`'s group collectives (all_reduce, broadcast, all_gather,
all_gather_into_tensor, reduce_scatter_tensor, all_to_all_single, reduce, barrier) are wrapped:
before call n on a watched group, the rank publishes entry n — op, group (name and ranks),
shapes, dtype, reduce op or root, the caller's site — and waits for every peer's entry n.
Entries that differ are a CollectiveMismatch raised *before* the call, so the divergent
collective never runs (gloo would abort on a size mismatch, NCCL hang or reduce garbage); a
peer that issues nothing within `wait_s` is named with its last entry, instead of a hang
until the process-group timeout. The watcher (compile_guard.agreement.watcher) stops ranks
that are elsewhere. Calls through a name bound before the ledger was installed (`from
torch.distributed import all_reduce`) are not seen; calls through `dist.<op>` are.

Unlike TORCH_DISTRIBUTED_DEBUG=DETAIL it adds no collective (three store round trips per
call), names the caller's source line, and can be switched on for one group in a running job.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import inspect
import itertools
import json
import sys
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from compile_guard.agreement.channel import ChannelError, SideChannel, decode, default_store, encode
from compile_guard.agreement.watcher import Watcher
from compile_guard.health.sites import relative_site

OPS = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor",
       "all_to_all_single", "reduce", "barrier")  # fmt: skip
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

    def __init__(self, *, groups: list[dist.ProcessGroup] | None = None, wait_s: float = 10.0,
                 store: dist.Store | None = None) -> None:  # fmt: skip
        if not 0 < wait_s <= 600:
            raise ValueError(f"wait_s={wait_s} is invalid; expected seconds in (0, 600] (default 10)")
        self.wait_s = wait_s
        self.rank = dist.get_rank()
        self.groups = {g.group_name: g for g in (groups or [dist.group.WORLD])}
        store = store if store is not None else default_store()
        prefix = f"compile_guard/ledger{next(_INSTANCES)}"
        self.channel = SideChannel(store, prefix=prefix)
        ranks = tuple(sorted({r for g in self.groups.values() for r in dist.get_process_group_ranks(g)}))
        self.watcher = Watcher(store, prefix=prefix, rank=self.rank, group=",".join(self.groups), ranks=ranks,
                               event="collective_mismatch")  # fmt: skip
        self.calls = dict.fromkeys(self.groups, 0)  # entries so far per group
        self._originals: dict[str, Callable] = {}
        self._active = False  # the ledger's own work is never recorded

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
        fields = {k: _describe(v) for k, v in arguments.items() if k not in ("group", "async_op", "group_src",
                                                                              "group_dst")}  # fmt: skip
        return {"op": op, "group": {"name": group.group_name, "ranks": dist.get_process_group_ranks(group)},
                "args": fields, "site": _site()}  # fmt: skip

    def _agree(self, op: str, group: dist.ProcessGroup, arguments: dict[str, Any]) -> None:
        self._active = True
        try:
            name = group.group_name
            n = self.calls[name]
            self.calls[name] = n + 1
            mine = {"n": n, "rank": self.rank, **self._entry(op, group, arguments)}
            peers = [r for r in dist.get_process_group_ranks(group) if r != self.rank]
            with self.watcher.waiting():
                verdict = self._compare(name, n, mine, peers)
                if verdict is not None:
                    self.watcher.raise_verdict(verdict)
        finally:
            self._active = False

    def _compare(self, name: str, n: int, mine: dict[str, Any], peers: list[int]) -> dict[str, Any] | None:
        store = self.channel.store
        key = functools.partial(self.channel.key, name)
        store.set(key("s", n, self.rank), encode(mine, what=f"rank {self.rank}'s ledger entry"))
        if n >= 1:  # every peer read my entry n-1 before it could publish its n, which I am about to read
            store.delete_key(key("s", n - 1, self.rank))
        try:
            store.wait([key("s", n, r) for r in peers], datetime.timedelta(seconds=self.wait_s))
        except dist.DistStoreError:
            return self._declare(self._missing(name, n, mine, peers))
        try:
            theirs = [decode(v, what=f"rank {r}'s ledger entry {n}")
                      for r, v in zip(peers, store.multi_get([key("s", n, r) for r in peers]), strict=True)]
        except ChannelError as exc:
            return self._declare({"error": "ProtocolError", "kind": "bad_entry", "entry": n, "fields": [],
                                  "text": f"eager-collective ledger: {exc}"})  # fmt: skip
        entries = sorted([mine, *theirs], key=lambda e: e["rank"])
        issued = [{k: v for k, v in e.items() if k not in ("rank", "site")} for e in entries]
        if all(e == issued[0] for e in issued):
            return None
        lines = [f"eager collective #{n} on group {name} differs across ranks; stopped before the call"]
        lines += [f"  rank{e['rank']}: {e['op']} {json.dumps(e['args'], sort_keys=True)} at {e['site']}"
                  for e in entries]  # fmt: skip
        return self._declare({"error": "CollectiveMismatch", "kind": "mismatch", "entry": n, "fields": ["entry"],
                              "first_collective": lines[1:], "text": "\n".join(lines)})  # fmt: skip

    def _missing(self, name: str, n: int, mine: dict[str, Any], peers: list[int]) -> dict[str, Any]:
        absent = [r for r in peers if not self.channel.has(name, "s", n, r)]
        lines = [f"eager collective #{n} on group {name}: rank(s) {absent} issued nothing within {self.wait_s:.1f}s",
                 f"  rank{self.rank}: {mine['op']} {json.dumps(mine['args'], sort_keys=True)} at {mine['site']}"]
        for r in absent:
            last = self.channel.store.get(self.channel.key(name, "s", n - 1, r)) if n and self.channel.has(
                name, "s", n - 1, r) else None  # fmt: skip
            lines.append(f"  rank{r}: last entry #{n - 1}: {decode(last, what='entry') if last else '(none)'}")
        return {"error": "CollectiveMismatch", "kind": "missing", "entry": n, "fields": ["entry"],
                "text": "\n".join(lines)}  # fmt: skip

    def _declare(self, verdict: dict[str, Any]) -> dict[str, Any]:
        every = sorted({r for g in self.groups.values() for r in dist.get_process_group_ranks(g)})
        return self.channel.declare({**verdict, "by": self.rank}, tuple(every))

    def close(self) -> None:
        for op, original in self._originals.items():
            setattr(dist, op, original)
        self._originals.clear()
        self.watcher.close(self.channel)

    def __enter__(self) -> CollectiveLedger:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def ledger_on(enabled: bool, *, groups: list[dist.ProcessGroup]) -> Iterator[CollectiveLedger | None]:
    """`with ledger_on(spec.eager_ledger, groups=[...])`: the ledger while the block runs, when enabled."""
    if not enabled:
        yield None
        return
    with CollectiveLedger(groups=groups) as ledger:
        yield ledger
