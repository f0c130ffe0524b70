"""The quality measurement's options: what the ranks measure (`Measure`, in the run spec) and how the parent
judges it (`Judging`). Torch-free; each default is argued, with the noise measured, in docs/check.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError

COMPILE_TIME_MODES = ("off", "auto", "cold")
# a compile time's cache state (compile_guard.quality.compile_time.state_of says which is which)
WARM, COLD, MISS, MIXED, UNCACHED, REWARM = "warm", "cold", "miss", "mixed", "uncached", "rewarm"
UNJUDGED = (MISS, MIXED)  # reported, never stored in a baseline nor compared


# glibc malloc's thresholds, fixed for the check's ranks by the launcher (compile_guard.flow.check_run): glibc
# reads them once, before any thread starts (mallopt() called mid-run is MT-unsafe: with gloo's threads alive
# it corrupted the heap once in 400 tests). By default glibc moves its mmap threshold and trims the heap as
# blocks come and go, so whether eager's ~1 MB temporaries fault fresh pages each step depends on the run's
# history: eager's step time varied x1.3 between runs of one build here (docs.examples.quality_block: 2.31-3.03
# ms), the compiled one's (fewer temporaries) x1.1, and the speedup with them (1.13-1.44); fixed, 2.14-2.39 ms and
# 1.08-1.15. In place under someone else's launcher they are whatever that launcher set (reported).
STEADY_ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}


class QualityOptionError(ConfigError):
    """A quality option out of range: names the option, the value seen and the range (exit 2)."""


@dataclass(frozen=True, kw_only=True)
class Measure:
    accuracy: bool = True  # compiled vs eager vs an fp64 eager reference, per output, on the warmup inputs
    parity: bool = True  # replicated outputs bitwise-equal on every rank of the group (silent drift)
    speed: bool = True  # steady-state step latency, eager and compiled interleaved
    # "auto": the run's compile as it happened (warm or cold cache, stated); "cold": every rank compiles in an
    # empty inductor cache directory of its own, then again warm from it; "off"
    compile_time: str = "auto"
    memory: bool = True  # peak device memory, compiled / eager (CUDA only; CPU says n/a)
    repeats: int = 10  # interleaved eager/compiled pairs per rank (docs/check.md: the noise it leaves, its cost)
    max_calls: int = 2  # warmup calls of the compiled region replayed for accuracy (the engine makes ~5 a chunk)
    tolerance: float = 0.0  # 0: per dtype (fp32 1e-4, fp16/bf16 1e-2, fp64 1e-7), as torch's benchmarks

    def __post_init__(self) -> None:
        if self.compile_time not in COMPILE_TIME_MODES:
            raise QualityOptionError(
                f"--compile-time {self.compile_time!r} is invalid; pick one of {list(COMPILE_TIME_MODES)}"
            )
        if not 3 <= self.repeats <= 1000:
            raise QualityOptionError(f"--repeats {self.repeats} is invalid; expected 3..1000 (the test needs >= 3)")
        if not 1 <= self.max_calls <= 64:
            raise QualityOptionError(f"max_calls {self.max_calls} is invalid; expected 1..64")
        if not 0 <= self.tolerance < 1:
            raise QualityOptionError(f"--tolerance {self.tolerance} is invalid; expected 0 (per dtype) or (0, 1)")

    @property
    def any(self) -> bool:
        return self.accuracy or self.parity or self.speed or self.compile_time != "off" or self.memory

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> Measure:
        if not isinstance(raw, dict):
            raise QualityOptionError(f"quality options are {type(raw).__name__}, expected an object")
        unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise QualityOptionError(f"unknown quality option(s) {unknown}; parent and ranks on different versions?")
        return cls(**raw)


OFF = Measure(accuracy=False, parity=False, speed=False, compile_time="off", memory=False)


@dataclass(frozen=True, kw_only=True)
class Judging:
    # a speedup below the baseline's by more than this factor, and significantly so, is a regression
    speed_factor: float = 1.2
    alpha: float = 0.01  # the one-sided Mann-Whitney test's level (per rank)
    # compile time / the reference compile in the same run, above the baseline's by this factor: a regression
    compile_factor: float = 1.3
    compile_floor_s: float = 1.0  # ... and by at least this many seconds of this run's compile (tiny compiles jitter)
    memory_factor: float = 1.10  # peak memory compiled / eager above the baseline's by this factor (CUDA only)

    def __post_init__(self) -> None:
        for name in ("speed_factor", "compile_factor", "memory_factor"):
            if not 1.0 <= getattr(self, name) <= 100:
                raise QualityOptionError(
                    f"--{name.replace('_', '-')} {getattr(self, name)} is invalid; expected a factor in [1, 100]"
                )
        if not 0 < self.alpha < 0.5:
            raise QualityOptionError(f"--alpha {self.alpha} is invalid; expected (0, 0.5)")
        if self.compile_floor_s < 0:
            raise QualityOptionError(f"compile_floor_s {self.compile_floor_s} is invalid; expected >= 0")
