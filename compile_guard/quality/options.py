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
    repeats: int = 20  # eager/compiled pairs of the judged (local) speed figure per rank (docs/check.md: its cost)
    max_calls: int = 2  # warmup calls of the compiled region replayed for accuracy (the engine makes ~5 a chunk)
    tolerance: float = 0.0  # 0: per dtype (fp32 1e-4, fp16/bf16 1e-2, fp64 1e-7), as torch's benchmarks

    def __post_init__(self) -> None:
        if self.compile_time not in COMPILE_TIME_MODES:
            raise QualityOptionError(
                f"--compile-time {self.compile_time!r} is invalid; pick one of {list(COMPILE_TIME_MODES)}"
            )
        if not 6 <= self.repeats <= 1000:
            raise QualityOptionError(
                f"--repeats {self.repeats} is invalid; expected 6..1000 (pairs, two per ABBA sample: the test needs"
                " >= 3 samples)"
            )
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


JUDGE, REPORT = "judge", "report"  # what a check does with the timings (speed, compile time): --timings


@dataclass(frozen=True, kw_only=True)
class Judging:
    # The two timing rules (compile_guard.quality.stats.growth): a time that grew significantly (one-sided, at
    # `alpha`) and by more than half its factor is a regression; a growth of the whole factor is caught whenever
    # the run's minimum detectable effect is below it. docs/check.md argues each default from measured noise.
    # the compiled step's time relative to eager's: 1.05 is a speedup of 1/1.05 = 0.952x the baseline's (torch's
    # compiler dashboard flags below 0.95x)
    speed_factor: float = 1.05
    alpha: float = 0.001  # the one-sided level of both timing tests, per rank
    speed_noise: float = 0.035  # relative sd of a run's speedup between runs on one machine, unseen by its samples
    # compile CPU seconds (a cold one measured each rank alone): the growth to catch (the dashboard flags x1.15)
    compile_factor: float = 1.15
    compile_noise: float = 0.2  # relative sd of a run's compile CPU seconds between runs on one machine
    compile_floor_s: float = 1.0  # ... and by at least this many seconds of this run's compile (tiny compiles jitter)
    memory_factor: float = 1.10  # peak memory compiled / eager above the baseline's by this factor (CUDA only)
    # "judge": timings are judged against a baseline from the same machine kind; "report": shown, never judged
    timings: str = JUDGE

    def __post_init__(self) -> None:
        for name in ("speed_factor", "compile_factor", "memory_factor"):
            if not 1.0 <= getattr(self, name) <= 100:
                raise QualityOptionError(
                    f"--{name.replace('_', '-')} {getattr(self, name)} is invalid; expected a factor in [1, 100]"
                )
        if not 0 < self.alpha < 0.5:
            raise QualityOptionError(f"--alpha {self.alpha} is invalid; expected (0, 0.5)")
        for name in ("speed_noise", "compile_noise"):
            if not 0 < getattr(self, name) < 1:
                raise QualityOptionError(
                    f"--{name.replace('_', '-')} {getattr(self, name)} is invalid; expected a fraction in (0, 1)"
                )
        if self.compile_floor_s < 0:
            raise QualityOptionError(f"compile_floor_s {self.compile_floor_s} is invalid; expected >= 0")
        if self.timings not in (JUDGE, REPORT):
            raise QualityOptionError(f"--timings {self.timings!r} is invalid; pick one of {[JUDGE, REPORT]}")
