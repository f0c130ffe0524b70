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

from engine.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Knob:
    name: str  # environment variable name
    parse: Callable[[str], Any]  # str -> value; raises ValueError on bad text
    default: Any  # value when unset; None means "required where it is read"
    meaning: str  # one line for --help and the README
    parity: bool  # True: must hold the same value on every rank


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected one of 1/0/true/false/yes/no/on/off, got {text!r}")


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 600:
        raise ValueError(f"expected seconds in (0, 600], got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected an int >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 10:
        raise ValueError(f"expected a fraction in [0, 10], got {value}")
    return value


# the knob table: one variable per entry, read down its columns: the formatter leaves it as written
# fmt: off
KNOBS: tuple[Knob, ...] = (
    # torchrun-compatible rendezvous; per-rank by nature, so never parity-checked.
    Knob(name="RANK", parse=int, default=None, meaning="global rank of this process", parity=False),
    Knob(name="WORLD_SIZE", parse=int, default=None, meaning="number of rank processes", parity=True),
    Knob(name="LOCAL_RANK", parse=int, default=0, meaning="rank on this host (picks the CUDA device)", parity=False),
    Knob(name="MASTER_ADDR", parse=str, default="127.0.0.1", meaning="rendezvous host", parity=True),
    Knob(name="MASTER_PORT", parse=int, default=None, meaning="rendezvous port", parity=True),
    Knob(name="TORCHELASTIC_USE_AGENT_STORE", parse=_flag, default=False,
         meaning="torchrun: its agent hosts the store at MASTER_ADDR:MASTER_PORT (it outlives every rank)",
         parity=True),
    Knob(name="TORCHELASTIC_RESTART_COUNT", parse=int, default=0,
         meaning="torchrun: how often the job restarted (keys on the agent's store are per attempt)", parity=True),
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
        name="TORCH_TRACE",
        parse=str,
        default=None,
        meaning="torch's structured trace directory (tlparse input); check --dump-dir sets it when unset",
        parity=False,
    ),
    Knob(
        name="COMPILE_GUARD_RUN_DIR",
        parse=str,
        default=None,
        meaning="launcher's run directory: ranks write failure records here",
        parity=False,
    ),
    # Runtime knobs: each changes what a rank does or gates a collective, so all are parity-checked.
    Knob(name="COMPILE_GUARD_TP_PLAN", parse=str, default="v1_generator_only",
         meaning="control-plane plan id (only v1_generator_only runs today)", parity=True),
    Knob(name="COMPILE_GUARD_PP_ENABLED", parse=_flag, default=False,
         meaning="pipeline-parallel topology on/off (the TP runtime refuses on)", parity=True),
    Knob(name="COMPILE_GUARD_DEBUG_SYNC", parse=_flag, default=False,
         meaning="debug barrier after every chunk (gates a collective)", parity=True),
    Knob(name="COMPILE_GUARD_INPUT_DIGEST", parse=_flag, default=True,
         meaning="compare sha256 digests of broadcast inputs across ranks every chunk", parity=True),
    Knob(name="COMPILE_GUARD_FINGERPRINT_EVERY", parse=_positive_int, default=32,
         meaning="check weight-shard fingerprints every N generator calls (and at init)", parity=True),
    Knob(name="COMPILE_GUARD_WATCHDOG_S", parse=_seconds, default=5.0,
         meaning="a worker with no header for this long exits", parity=True),
    Knob(name="COMPILE_GUARD_HEARTBEAT_S", parse=_seconds, default=0.5,
         meaning="rank0 sends a NOOP header this often while idle", parity=True),
    Knob(name="COMPILE_GUARD_ATTN_IMPL", parse=str, default="auto",
         meaning="attention kernel: auto, sdpa or math (auto resolves per build)", parity=True),
    Knob(name="COMPILE_GUARD_COLLECTIVE_PATH", parse=str, default="auto",
         meaning="TP all-reduce path: auto, eager_inplace, functional, disabled_inplace", parity=True),
    # Test-only fault hooks: the same value on every rank ("perturb on rank 0"), so a hook
    # can never create a per-rank configuration or a conditional collective.
    Knob(name="COMPILE_GUARD_TEST_FAULT", parse=str, default="",
         meaning="test-only: which fault to inject (compile_guard.matrix.faults.FAULTS)", parity=True),
    Knob(name="COMPILE_GUARD_TEST_FAULT_RANK", parse=int, default=0,
         meaning="test-only: the rank that injects the fault", parity=True),
    Knob(name="COMPILE_GUARD_TEST_FAULT_CHUNK", parse=int, default=1,
         meaning="test-only: the chunk_index at which it is injected", parity=True),
    # glibc malloc, read by glibc itself at start; compile_guard's launcher fixes it for check's ranks (their speed
    # measurement: compile_guard.quality.speed) and reads whether it is set. Host tuning: never parity-checked.
    Knob(name="MALLOC_MMAP_THRESHOLD_", parse=int, default=None,
         meaning="glibc malloc's fixed mmap threshold (set for check's ranks: steady eager step times)", parity=False),
    Knob(name="COMPILE_GUARD_TEST_LOWERING", parse=str, default="",
         meaning="test-only: a simulated inductor upgrade (compile_guard.matrix.lowering_faults.LOWERINGS)",
         parity=True),
    Knob(name="COMPILE_GUARD_TEST_LOWERING_RANK", parse=int, default=-1,
         meaning="test-only: the rank whose inductor it patches (-1: every rank)", parity=True),
    Knob(name="COMPILE_GUARD_TEST_SLOW_COMPILE_S", parse=_seconds, default=6.0,
         meaning="test-only: CPU seconds the slow_compile lowering burns per graph", parity=True),
    Knob(name="COMPILE_GUARD_TEST_SLOWER_STEP", parse=_fraction, default=0.0,
         meaning="test-only: the measured compiled step followed by this fraction of its cost in CPU work",
         parity=True),
)
# fmt: on

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
        raise ConfigError(f"environment variable {name}={text!r} is invalid: {exc}") from None


def parity_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every parity knob's parsed value (defaults included), for the startup handshake."""
    return {knob.name: read(knob.name, environ) for knob in KNOBS if knob.parity}


def under_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """True when a launcher (torchrun or ours) already set RANK and WORLD_SIZE."""
    return read("RANK", environ) is not None and read("WORLD_SIZE", environ) is not None
