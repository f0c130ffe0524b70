"""Guard your own model: `check --target package.module:factory`.

The factory runs on every rank with a `TargetContext` (rank, world size, the TP group, the
device) and returns a `GuardTarget`: the function to compile (compile_guard compiles it
through its recording backend) and the example inputs, one argument tuple per step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from compile_guard import named
from engine.errors import ConfigError, RankCrashed

log = logging.getLogger("compile_guard.integrations.target")


class TargetError(ConfigError):
    """A target that cannot be loaded or used as given (not found, not a factory, the wrong thing returned): the
    user's input, exit 2, naming the target and what to fix."""


class TargetCrashed(RankCrashed):
    """The target's own code raised (its module while importing, its factory): the code under test failed, exit 3,
    its traceback in the rank's log. Never an input error: the command line was right."""


@dataclass(frozen=True, kw_only=True)
class TargetContext:
    rank: int  # global rank
    world_size: int  # ranks in the job (= the TP degree)
    tp_group: dist.ProcessGroup  # pass it to every collective, explicitly
    device: torch.device


@dataclass(frozen=True, kw_only=True)
class GuardTarget:
    fn: Callable[..., Any]  # what compile_guard compiles and checks
    inputs: list[tuple[Any, ...]]  # one argument tuple per step; every step runs in warmup and steady state
    # called with the step's number (0, 1, ... across warmup and steady state) before it runs: the
    # per-step state a serving loop updates outside the compiled function (a scheduler, a cache position)
    before_step: Callable[[int], None] | None = None
    # outputs equal on every rank (after an all-reduce, say): True for the whole output, or the indices of a tuple
    # output. Compared bitwise across the ranks after the run: a difference is drift (exit 1). A DTensor output
    # placed Replicate is found without this; a sharded output is never compared.
    replicated: bool | tuple[int, ...] = False


def load_factory(spec: str) -> Callable[[TargetContext], Any]:
    """'package.module:factory' -> the factory; TargetError with the fix otherwise, TargetCrashed when the user's
    module raised while importing."""
    try:
        return named.callable_at(
            spec, what="--target", example="docs.examples.tp_mlp:good", shape="package.module:factory"
        )
    except named.NameNotFound as exc:
        raise TargetError(str(exc)) from None
    except Exception as exc:  # the user's module failed while importing: their code crashed, named as such
        module_name = spec.partition(":")[0]
        log.error("--target %r: importing %r raised; traceback:", spec, module_name, exc_info=exc)
        raise TargetCrashed(f"--target {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc


def build(spec: str, ctx: TargetContext) -> GuardTarget:
    factory = load_factory(spec)
    try:
        target = factory(ctx)
    except Exception as exc:  # the user's code crashed: report it as theirs, with the target's name and traceback
        log.error("--target %r: the factory raised; traceback:", spec, exc_info=exc)
        raise TargetCrashed(f"--target {spec!r}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(target, GuardTarget) or not callable(target.fn):
        raise TargetError(
            f"--target {spec!r}: the factory returned {type(target).__name__}; expected "
            "compile_guard.GuardTarget(fn=<callable>, inputs=[(args...), ...])"
        )
    if not target.inputs or not all(isinstance(step, tuple) for step in target.inputs):
        raise TargetError(f"--target {spec!r}: inputs must be a non-empty list of argument tuples")
    if not (
        isinstance(target.replicated, bool)
        or (isinstance(target.replicated, tuple) and all(isinstance(i, int) for i in target.replicated))
    ):
        raise TargetError(
            f"--target {spec!r}: replicated is {target.replicated!r}; expected True, False or a tuple"
            " of output indices, e.g. (0,)"
        )
    return target
