"""The private torch entry points the harness and the compile agreement use, in one place, each with what it
falls back to (and the torch versions a behaviour differs on).

Checked on torch 2.13.0 (CPU) and 2.14.1 (the CUDA build on CPU: the agreement's tests and the upgrade
rehearsal, 2026-12-02); every one is imported where it is called, so a torch without it
fails that call loudly (naming what is missing) or takes the fallback written next to it —
never a silent "?" inside a field the ranks must agree on. Other modules call these, not torch's
underscored names. (The rest of the harness's private uses move here with the issue "every torch
the package admits".)
"""

from __future__ import annotations

import datetime
from typing import Any, Callable

import torch
import torch.distributed as dist


class TorchInternalMissing(RuntimeError):
    """A private torch entry point the agreement needs is not in this torch."""

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(f"torch {torch.__version__} has no {what} ({type(exc).__name__}: {exc}); the compile"
                         " agreement needs it: run a torch it was checked on (2.13, 2.14) or turn it off")  # fmt: skip


def default_store() -> dist.Store:
    """The store the job's default group was initialised with (torchrun's, or our launcher's).
    torch.distributed.distributed_c10d._get_default_store (2.13)."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store
    except ImportError as exc:
        raise TorchInternalMissing("distributed_c10d._get_default_store", exc) from None
    return _get_default_store()


def group_timeout_s(group: dist.ProcessGroup, device: torch.device | None = None) -> float:
    """The timeout the group was made with. ProcessGroup._get_backend(device).options._timeout (2.13: gloo and
    NCCL); falls back to torch's default for the backend (30 min for NCCL, 30 min for gloo in 2.13)."""
    try:
        backend = group._get_backend(device or torch.device("cuda" if dist.get_backend(group) == "nccl" else "cpu"))
        timeout = backend.options._timeout
    except (AttributeError, RuntimeError):
        from torch.distributed.constants import default_pg_timeout

        timeout = default_pg_timeout
    return timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)


def compiling_frame() -> tuple[Any, dict[str, Any]] | None:
    """(code, f_locals) of the frame dynamo is compiling, inside a backend call; None outside dynamo.
    InstructionTranslator.current_tx() (2.13): .f_code, .f_locals."""
    from torch._dynamo.symbolic_convert import InstructionTranslator

    try:
        tx = InstructionTranslator.current_tx()
    except (AttributeError, IndexError, AssertionError):  # not under dynamo (a backend called by hand)
        return None
    return tx.f_code, getattr(tx, "f_locals", {}) or {}


def recompile_reason() -> str | None:
    """dynamo's reason for this compile (its first cache entry's failed guard), or None for a first compile.
    torch._dynamo.utils.get_metrics_context()._metrics["recompile_reason"] (2.13)."""
    from torch._dynamo.utils import get_metrics_context

    return getattr(get_metrics_context(), "_metrics", {}).get("recompile_reason")


def guard_failures(code: Any) -> list[str]:
    """Every failed-guard reason dynamo recorded for `code` so far, one per cache entry per recompile, each
    'compile_id: guard ...'. torch._dynamo.guards.guard_failures (2.13: a dict keyed by the original code)."""
    from torch._dynamo import guards

    return list(getattr(guards, "guard_failures", {}).get(code, []))


def compile_id() -> str:
    """dynamo's id of the compile in progress ('frame/attempt'). torch._guards.CompileContext (2.13)."""
    from torch._guards import CompileContext

    cid = CompileContext.current_compile_id()
    return str(cid) if cid is not None else "?"


def on_compiles(start: Callable[[Any], None], end: Callable[[Any], None]) -> Callable[[], None]:
    """Call `start`/`end` around every dynamo compile in this process; returns the function that removes them.
    torch._dynamo.callback.callback_handler (2.13)."""
    from torch._dynamo.callback import callback_handler

    handles = (callback_handler.register_start_callback(start), callback_handler.register_end_callback(end))

    def remove() -> None:
        callback_handler.remove_start_callback(handles[0])
        callback_handler.remove_end_callback(handles[1])

    return remove


def torch_release() -> tuple[int, int]:
    """(major, minor) of the installed torch: where a behaviour differs by release."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def listening_store(sock: Any, timeout_s: float) -> dist.TCPStore:
    """A TCPStore server on an already bound and listening socket, which it takes over (no pick-a-free-port race).
    `TCPStore(master_listen_fd=...)`: torch 2.8-2.14 (checked 2.13.0, 2.14.1) take the fd on the libuv backend;
    2.6 and 2.7 (checked 2.6.0) refuse it there (NotImplementedError) and take it on the legacy backend, chosen
    with `use_libuv=False` (a constructor argument: USE_LIBUV=0 in the environment does not reach it)."""
    port = sock.getsockname()[1]
    legacy = {"use_libuv": False} if torch_release() < (2, 8) else {}
    # The store takes the fd over (and closes it): detach so Python never closes it twice.
    return dist.TCPStore("127.0.0.1", port, None, True, datetime.timedelta(seconds=timeout_s),
                         wait_for_workers=False, master_listen_fd=sock.detach(), **legacy)  # fmt: skip


def clone_store(store: dist.Store) -> dist.Store:
    """A connection of this thread's own to `store`'s server (a TCPStore client serialises its operations).
    `Store.clone()`: torch 2.8+ (checked 2.13.0, 2.14.1). Before 2.8 (checked 2.6.0) there is none: a new client
    of the TCPStore under any PrefixStore (`_underlying_non_prefix_store`; 2.6 does not expose a PrefixStore's
    prefix), so every connection of every rank then shares the server's bare key space — the same on all ranks,
    since every rank runs the one torch the env handshake agreed on."""
    if hasattr(store, "clone"):
        return store.clone()
    base = getattr(store, "_underlying_non_prefix_store", store)
    if not isinstance(base, dist.TCPStore):
        raise TorchInternalMissing("Store.clone (and the store is no TCPStore to connect to again)",
                                   AttributeError(type(base).__name__))  # fmt: skip
    return dist.TCPStore(base.host, base.port, None, False, base.timeout, use_libuv=base.libuvBackend)


NO_RECOMPILE_REASON = "(this torch's compilation metrics carry no recompile reason: torch < 2.7)"


def compile_records(since: int, *, limit: int) -> tuple[list[dict[str, Any]], int]:
    """dynamo's compilation metrics from record `since` on, as plain dicts (compile_id, co_name, co_filename,
    co_firstlineno, guard_count, recompile_reason), and the count so far; keeps at least `limit` records.
    torch._dynamo.utils.get_compilation_metrics / set_compilation_metrics_limit (2.6.0, 2.13.0, 2.14.1 checked).
    `recompile_reason` is a field from 2.7 on; on 2.6 a recompile's reason reads NO_RECOMPILE_REASON (said,
    never a guess), and the recompile itself is still counted (its compile id's attempt)."""
    import torch._dynamo.utils as dynamo_utils

    dynamo_utils.set_compilation_metrics_limit(limit)
    metrics = dynamo_utils.get_compilation_metrics()
    records = [{"compile_id": m.compile_id, "co_name": m.co_name, "co_filename": m.co_filename,
                "co_firstlineno": m.co_firstlineno, "guard_count": m.guard_count,
                "recompile_reason": getattr(m, "recompile_reason", NO_RECOMPILE_REASON)}
               for m in metrics[since:]]  # fmt: skip
    return records, len(metrics)


def resolve_process_group(name: str) -> dist.ProcessGroup:
    """The group a functional collective's graph node names. distributed_c10d._resolve_process_group (2.6.0,
    2.13.0, 2.14.1)."""
    from torch.distributed.distributed_c10d import _resolve_process_group

    return _resolve_process_group(name)


def outside_tracing_context() -> Any:
    """A context with no dynamo TracingContext (a trace of our own inside a backend call). torch._guards.tracing
    (2.6.0, 2.8.0, 2.13.0, 2.15.0 checked): without it, 2.8 asserts that the active fake mode is the context's."""
    from torch._guards import tracing

    return tracing(None)


# Every private entry point above, by its dotted path: tests/test_compat.py resolves each against the installed
# torch. The fallbacks for the ones some admitted torch lacks (Store.clone before 2.8, recompile_reason before 2.7)
# are in clone_store and compile_records, and are not listed here.
ENTRY_POINTS = (
    "torch.distributed.distributed_c10d._get_default_store",
    "torch.distributed.distributed_c10d._resolve_process_group",
    "torch.distributed.ProcessGroup._get_backend",
    "torch._dynamo.symbolic_convert.InstructionTranslator.current_tx",
    "torch._dynamo.utils.get_metrics_context",
    "torch._dynamo.utils.get_compilation_metrics",
    "torch._dynamo.utils.set_compilation_metrics_limit",
    "torch._dynamo.guards.guard_failures",
    "torch._guards.CompileContext.current_compile_id",
    "torch._dynamo.callback.callback_handler",
    "torch._guards.tracing",
)


def resolve(path: str) -> Any:
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    import importlib

    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            found = getattr(found, attr)
        return found
    raise ImportError(path)
