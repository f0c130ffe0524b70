"""The shell of every rank program: log setup, join, the body, leave; the exit code says how it ended.

Each EngineError ends the rank with its own exit code (engine.errors); a ValueError is a
configuration error (2); a RuntimeError out of a collective means a peer died or timed out
(PeerLost). The engine's own programs (`engine.topology.*`) and compile_guard's rank
programs (`compile_guard.ranks.*`) all run through `rank_main`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

import torch

from engine import events, knobs
from engine.config import DistConfig
from engine.errors import EngineError, PeerLost
from engine.layout import RankContext
from engine.lifecycle import joined

log = logging.getLogger("engine.rank")
EXIT_USAGE = 2


def exit_code_of(exc: BaseException) -> int:
    """Log how a rank ends and return its exit code (EngineError codes; 2 for configuration)."""
    if isinstance(exc, EngineError):
        events.emit("fatal", error=type(exc).__name__, exit_code=exc.exit_code, message=str(exc).splitlines()[0])
        log.error("exiting with %s (%s): %s", exc.exit_code, type(exc).__name__, exc)
        return exc.exit_code
    log.error("configuration error: %s", exc)
    return EXIT_USAGE


def rank_main(dist_cfg: DistConfig, body: Callable[[RankContext], dict[str, Any]],
              done: Callable[[dict[str, Any]], None]) -> int:  # fmt: skip
    """Run `body` as one rank of the job; `done` gets its result after the group is left."""
    rank = knobs.read("RANK")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(1)
    try:
        with joined(dist_cfg) as ctx:
            try:
                result = body(ctx)
            except RuntimeError as exc:  # a collective failed underneath us: a peer died or timed out
                raise PeerLost(f"rank {ctx.rank}: collective failed: {exc}") from exc
        done(result)
        return 0
    except (EngineError, ValueError) as exc:
        return exit_code_of(exc)
