"""What the parent asks of a check's ranks: one frozen `RankJob`, canonical JSON both ways, read by the one
typed-JSON reader (compile_guard.contracts.wire). The way back is compile_guard.contracts.rank_report.

A job is the engine's run (`engine.runspec.RunSpec`: engine fields only; the engine never sees the rest) plus the
harness's typed options: what to measure after the run (`quality.options.Measure`), how the ranks agree
(`Agreement`), the user's model instead of the engine's (`Target`), and the parent's deadline. The parent builds
it once (compile_guard.flow.scenarios.resolve and the flags, a matrix row, the pytest plugin) and hands it whole
to every rank (`--job '<json>'`); every rank checks the job's options are the same on every peer (the compile
handshake, `parity_items`). No torch import.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from compile_guard.contracts import wire
from compile_guard.quality.options import Measure
from engine.errors import ConfigError
from engine.runspec import RunSpec


class RankJobError(wire.WireError, ConfigError):
    """A job that is not what this version writes (a version mix between parent and ranks): exit 2 on the rank."""


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """How the ranks agree before anything divergent runs (compile_guard.agreement)."""

    compiles: bool = True  # every compiled graph agreed across its group before its first run
    inputs: bool = True  # --target: each step's input signature agreed before it runs (--no-input-agreement)
    eager_ledger: bool = False  # every eager c10d collective agreed before it is issued (--eager-ledger)
    gate_health: bool = True  # the post-warmup compile-health gather (off only for benchmarks' bare runs)
    stall_s: float = 0.0  # no progress from a peer for this long = a stall (0: a margin under the group timeout)

    def __post_init__(self) -> None:
        if not 0 <= self.stall_s <= 24 * 3600:
            raise ConfigError(f"stall_s={self.stall_s} is invalid; expected seconds >= 0 (0: under timeout_s)")


@dataclass(frozen=True, kw_only=True)
class Target:
    """A user's own model instead of the engine (`check --target`; compile_guard.integrations.target)."""

    factory: str  # "pkg.module:factory", called on every rank with a TargetContext
    steady: int = 3  # times the input steps run again after warmup


# the flat names the flags, the matrix rows and the tests use for a job's options -> (part, field)
FLAT = {
    "agree_compiles": ("agreement", "compiles"),
    "agree_inputs": ("agreement", "inputs"),
    "eager_ledger": ("agreement", "eager_ledger"),
    "gate_health": ("agreement", "gate_health"),
    "stall_s": ("agreement", "stall_s"),
}


@dataclass(frozen=True, kw_only=True)
class RankJob:
    spec: RunSpec  # the engine's run: topology, ranks, compile backend, model shape, timeouts
    target: Target | None = None  # None: the engine's scenario; else the user's model on topology tp
    agreement: Agreement = field(default_factory=Agreement)  # how the ranks agree
    measure: Measure = field(default_factory=Measure)  # what is measured after the run beside compile health
    deadline_s: float = 600.0  # the parent's hard limit for the whole run (a cold inductor compile included)

    def __post_init__(self) -> None:
        if self.target is not None and self.spec.topology != "tp":
            raise ConfigError(f"--target runs on topology tp (TP over every rank), got {self.spec.topology!r}")
        if not self.deadline_s > 0:
            raise ConfigError(f"deadline_s={self.deadline_s} is invalid; expected seconds > 0")

    @property
    def name(self) -> str:
        return self.spec.name

    def config_hash(self) -> str:
        """The baseline's config hash: the engine fields that define the compiled program, and the target."""
        return self.spec.config_hash(target=self.target.factory if self.target else None)

    def replace(self, **changes: Any) -> RankJob:
        """A copy with fields changed by their flat names (`stall_s`, `eager_ledger`, `quality` as a Measure's
        JSON, `deadline_s`, or any RunSpec field): what a matrix row's `spec` and a caller's overrides name."""
        parts: dict[str, dict[str, Any]] = {"agreement": {}, "spec": {}, "job": {}}
        for key, value in changes.items():
            if key in FLAT:
                part, name = FLAT[key]
                parts[part][name] = value
            elif key == "quality":
                parts["job"]["measure"] = value if isinstance(value, Measure) else Measure.from_dict(value)
            elif key in ("deadline_s", "target", "measure"):
                parts["job"][key] = value
            else:
                parts["spec"][key] = value
        return dataclasses.replace(
            self,
            spec=dataclasses.replace(self.spec, **parts["spec"]),
            agreement=dataclasses.replace(self.agreement, **parts["agreement"]),
            **parts["job"],
        )

    def parity_items(self) -> dict[str, Any]:
        """The job's options, flat, for the compile handshake: every rank must run the same job (the deadline is
        the parent's alone)."""
        items: dict[str, Any] = {"job.target": None if self.target is None else self.target.factory}
        if self.target is not None:
            items["job.target.steady"] = self.target.steady
        items.update({f"job.agreement.{k}": v for k, v in wire.plain(self.agreement).items()})
        items.update({f"job.measure.{k}": v for k, v in wire.plain(self.measure).items()})
        return items

    def to_json(self) -> str:
        return json.dumps(wire.plain(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RankJob:
        """The job a rank was given; RankJobError naming the field when it is not one this version writes."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise RankJobError(f"the rank job is not JSON ({exc})") from None
        return wire.read(cls, raw, what="the rank job", error=RankJobError, strict=True)
