"""The shell of every rank program: log setup, join, the body, leave; the exit code says how it ended.

Each EngineError ends the rank with its own exit code (engine.errors.RankCode); only a
ConfigError — a run spec, knob or target refused with the fix — is the user's input (2). A
failure of torch.compile itself is CompileFailed (with dynamo's message); a distributed error
(torch.distributed.DistError, or gloo's transport RuntimeError) means a collective failed under
us — a peer died or timed out (PeerLost); anything else, an ordinary ValueError of the model
under test or a bug of ours included, is RankCrashed. Every exception that is not one of ours
leaves its full traceback in the rank's log. The engine's own programs
(`engine.topology.*`) and compile_guard's rank programs (`compile_guard.ranks.*`) all run
through `rank_main`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

import torch

from engine import events, knobs, torch_private
from engine.config import DistConfig
from engine.errors import CompileFailed, ConfigError, EngineError, PeerLost, RankCrashed
from engine.layout import RankContext
from engine.lifecycle import joined

log = logging.getLogger("engine.rank")
# what gloo's transport raises (a plain RuntimeError on 2.6-2.15) when a peer's socket closes or a wait times out
_GLOO_TRANSPORT = ("gloo", "Connection closed by peer", "Connection reset by peer", "Timed out waiting")


def exit_code_of(exc: EngineError) -> int:
    """Log how a rank ends and return its exit code."""
    message = str(exc).splitlines()[0] if str(exc) else ""
    events.emit("fatal", error=type(exc).__name__, exit_code=int(exc.exit_code), message=message)
    if isinstance(exc, ConfigError):
        log.error("configuration error: %s", exc)
    else:
        log.error("exiting with %s (%s): %s", int(exc.exit_code), type(exc).__name__, exc)
    return int(exc.exit_code)


def _compile_failure(exc: BaseException) -> str | None:
    """dynamo's own message when `exc` is torch.compile failing (not a collective), else None."""
    if torch_private.is_dynamo_error(exc) or type(exc).__name__ in ("InductorError", "BackendCompilerFailed"):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, RecursionError):  # deep user code under dynamo (or a tracer) exhausts the stack
        return f"RecursionError: {exc}"
    return None


def _is_distributed(exc: BaseException) -> bool:
    """A collective or the store failed under us (not the model's own RuntimeError)."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    return type(exc) is RuntimeError and any(mark in str(exc) for mark in _GLOO_TRANSPORT)


def as_engine_error(exc: Exception, rank: int) -> EngineError:
    """What an exception out of a rank's body means, as one of ours (the traceback is logged)."""
    if isinstance(exc, EngineError):
        return exc
    log.error("rank %s: %s raised; traceback:", rank, type(exc).__name__, exc_info=exc)
    compile_message = _compile_failure(exc)
    if compile_message is not None:
        return CompileFailed(f"rank {rank}: torch.compile failed: {compile_message}")
    if _is_distributed(exc):  # a collective failed underneath us: a peer died or timed out
        return PeerLost(f"rank {rank}: collective failed: {exc}")
    return RankCrashed(f"rank {rank}: unexpected {type(exc).__name__}: {exc}")


def run_topology(spec: Any, run: Callable[..., dict[str, Any]]) -> int:
    """A topology's own command line: `run(ctx, spec, Hooks())` as this rank, its summary logged as run_done."""
    from engine.hooks import Hooks

    return rank_main(
        spec.dist_config(), lambda ctx: run(ctx, spec, Hooks()), lambda summary: events.emit("run_done", **summary)
    )


def rank_main(
    dist_cfg: DistConfig,
    body: Callable[[RankContext], Any],
    done: Callable[[Any], None],
    *,
    exit_status: Callable[[int], int] = int,
) -> int:
    """Run `body` as one rank of the job; `done` gets its result after the group is left. `exit_status`: how a
    thread that ends this process (the watchdog, an agreement's watcher) maps a rank code to its exit status
    (RankContext.exit_status; the code itself unless the body runs inside another program, in place)."""
    rank = knobs.read("RANK")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(1)
    try:
        with joined(dist_cfg, exit_status) as ctx:
            try:
                result = body(ctx)
            except Exception as exc:
                raise as_engine_error(exc, ctx.rank) from exc
        done(result)
        return 0
    except EngineError as exc:
        return exit_code_of(exc)
    except Exception as exc:  # joining or leaving failed (a rendezvous that never completes, say)
        return exit_code_of(as_engine_error(exc, rank))


def leave(code: int) -> None:
    """End a rank process with `code` now. Its group is destroyed and its outputs written by then
    (`rank_main`); interpreter teardown is skipped: after a failed compile its garbage collection over
    dynamo's state takes seconds, which would spend the launcher's grace and get the rank killed."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
