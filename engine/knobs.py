"""The one place that reads environment variables, as a table.

Every variable the engine or the harness looks at is a row here: name, type, default,
meaning, and whether it is parity-checked across ranks. The parity rows *are* the list of
env-parity keys: a variable that changes the graph, the kernels or gates a collective
must be parity-checked, or ranks can silently run different programs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping


@dataclass(frozen=True, kw_only=True)
class Knob:
    name: str  # environment variable name
    parse: Callable[[str], Any]  # str -> value; raises ValueError on bad text
    default: Any  # value when unset; None means "required where it is read"
    meaning: str  # one line for --help and the README
    parity: bool  # True: must hold the same value on every rank


KNOBS: tuple[Knob, ...] = (
    # torchrun-compatible rendezvous; per-rank by nature, so never parity-checked.
    Knob(name="RANK", parse=int, default=None, meaning="global rank of this process", parity=False),
    Knob(name="WORLD_SIZE", parse=int, default=None, meaning="number of rank processes", parity=True),
    Knob(name="LOCAL_RANK", parse=int, default=0, meaning="rank on this host (picks the CUDA device)", parity=False),
    Knob(name="MASTER_ADDR", parse=str, default="127.0.0.1", meaning="rendezvous host", parity=True),
    Knob(name="MASTER_PORT", parse=int, default=None, meaning="rendezvous port", parity=True),
    # Inductor's compile pool forks workers; one thread keeps compiles inside the rank's
    # process group (so the launcher's kill reaches them) and is what the launcher sets.
    Knob(
        name="TORCHINDUCTOR_COMPILE_THREADS",
        parse=int,
        default=None,
        meaning="inductor compile worker count (launcher sets 1)",
        parity=True,
    ),
    Knob(
        name="COMPILE_GUARD_RUN_DIR",
        parse=str,
        default=None,
        meaning="launcher's run directory: ranks write failure records here",
        parity=False,
    ),
)

_BY_NAME: dict[str, Knob] = {knob.name: knob for knob in KNOBS}


def read(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """Return the parsed value of knob `name`, or its default when unset."""
    knob = _BY_NAME.get(name)
    if knob is None:
        raise KeyError(f"{name} is not in engine.knobs.KNOBS; add a row for it there")
    env = os.environ if environ is None else environ
    text = env.get(name)
    if text is None:
        return knob.default
    try:
        return knob.parse(text)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={text!r} is invalid: {exc}") from None


def under_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """True when a launcher (torchrun or ours) already set RANK and WORLD_SIZE."""
    return read("RANK", environ) is not None and read("WORLD_SIZE", environ) is not None
