"""The engine's private torch entry points, in one place (the engine imports nothing of the harness, whose own
are in compile_guard.compat), each with the releases it was checked on: 2.6.0, 2.7.1, 2.8.0, 2.13.0, 2.15.0
(2026-12-02) and 2.9.1, 2.10.0, 2.11.0, 2.12.1, 2.14.1 (2026-12-05), by `make version-matrix`. A missing one fails its
call loudly, naming the installed torch.
"""

from __future__ import annotations

import collections
import importlib
from typing import Any, Callable

import torch
import torch.distributed as dist


def _private(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            f"torch {torch.__version__} has no {module}.{name} ({type(exc).__name__}: {exc}); the"
            " engine was checked on torch 2.6-2.15: run one of those"
        ) from None


# every entry point below, by module and name: tests/test_compat.py resolves each against the installed torch
ENTRY_POINTS = (
    ("torch._dynamo.utils", "counters"),
    ("torch._dynamo", "lookup_backend"),
    ("torch._dynamo.exc", "TorchDynamoException"),
    ("torch._inductor", "list_mode_options"),
    ("torch._inductor.compile_fx", "compile_fx"),
    ("torch.distributed.distributed_c10d", "_world"),
)


def graph_break_counts() -> collections.Counter:
    """dynamo's per-process graph-break counts by message. torch._dynamo.utils.counters["graph_break"]."""
    return collections.Counter(_private("torch._dynamo.utils", "counters")["graph_break"])


def lookup_backend(name: str) -> Callable:
    """A dynamo backend by name ("aot_eager", "eager"). torch._dynamo.lookup_backend."""
    return _private("torch._dynamo", "lookup_backend")(name)


def inductor_compiler(mode: str | None, dynamic: bool | None) -> Callable:
    """inductor's compile_fx with the config patches of `mode`. torch._inductor.list_mode_options, compile_fx."""
    import functools

    patches = _private("torch._inductor", "list_mode_options")(mode, dynamic) if mode else {}
    return functools.partial(_private("torch._inductor.compile_fx", "compile_fx"), config_patches=patches)


def is_dynamo_error(exc: BaseException) -> bool:
    """An error of dynamo's own. torch._dynamo.exc.TorchDynamoException."""
    return isinstance(exc, _private("torch._dynamo.exc", "TorchDynamoException"))


# Process groups kept alive past destroy_process_group, on torch < 2.8 only: see `destroy_process_groups`.
_KEPT_UNTIL_EXIT: list[Any] = []


def destroy_process_groups() -> None:
    """dist.destroy_process_group(), without torch 2.6/2.7's shutdown deadlock.

    Before 2.8 ProcessGroupGloo's destructor runs holding the GIL and waits for its workers' lock, while a
    worker releasing a finished collective's tensors (whose Python objects it now owns) waits for the GIL:
    measured on 2.6.0, rank 0 of a serving job hung in `destroy_process_group` in 2 of 4 runs (gdb: the main
    thread in ~ProcessGroupGloo, a gloo worker in PyInterpreter decref). Fixed in 2.8 (pytorch#154976, "Release
    GIL in PG destructor"). So before 2.8 every group object is kept past the destroy — torch's maps are
    cleared, the groups are shut down and unusable — and is reclaimed with the process: every rank program
    ends in os._exit (engine.rank_process.leave), which runs no destructor. The groups come from
    distributed_c10d._world.pg_map (2.6.0, 2.7.1 checked)."""
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if (major, minor) < (2, 8):
        _KEPT_UNTIL_EXIT.extend(_private("torch.distributed.distributed_c10d", "_world").pg_map)
    dist.destroy_process_group()
