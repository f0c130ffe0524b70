"""What a check rank reports to its parent: one frozen value, canonical JSON both ways, validated on arrival.

The way in is `engine.runspec.RunSpec`; this is the way back. A rank builds one `RankReport`
(compile_guard.ranks.check for the engine, compile_guard.ranks.target for --target) and writes
it once, as `probe-rank{r}.json` (or gathers it over the world group in place); the parent reads
it back with `from_json`, which checks every field and every compile-health metric against
`health.schema.CompileHealth` — a missing field or one of the wrong type is a `RankReportError`
naming the rank, the field and the type seen (the CLI's exit 3: parent and ranks disagree, a bug
or a version mix, never a verdict on the code under test). Data only: json.loads, never pickle.
No torch import: the parent reads these.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from compile_guard.health import schema

MESH, DRIVER = "mesh", "driver"
FILE = "probe-rank{rank}.json"  # what a launched check rank writes into its --out directory, read by the parent


class RankReportError(Exception):
    """A rank's report that is not what this version writes: names the rank, the field, what was seen."""


@dataclass(frozen=True, kw_only=True)
class RankReport:
    scenario: str  # the run spec's name (the scenario, or target-… for --target)
    rank: int  # global rank
    role: str  # MESH: in the symmetric group, probed; DRIVER: pp1's rank 0, out of the mesh, compiles nothing
    run: dict[str, Any]  # the run's own summary: generator calls and timers, chunks done, steps
    effective_backend: dict[str, Any] = field(default_factory=dict)  # what `auto` resolved to ({} for the driver)
    warmup: dict[str, Any] = field(default_factory=dict)  # the symmetric metrics after warmup ({} for the driver)
    final: dict[str, Any] = field(default_factory=dict)  # every CompileHealth metric at the end ({} for the driver)
    # accuracy, parity, speed, memory, compile time (compile_guard.quality.measure; {} when off or the driver)
    quality: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self)

    @property
    def is_mesh(self) -> bool:
        return self.role == MESH

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: Any, *, what: str) -> RankReport:
        if not isinstance(raw, dict):
            raise RankReportError(f"{what} is a JSON {type(raw).__name__}, expected an object")
        fields = dataclasses.fields(cls)
        required = [
            f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        unknown = sorted(set(raw) - {f.name for f in fields})
        missing = [name for name in required if name not in raw]
        if unknown or missing:
            raise RankReportError(
                f"{what}: unknown field(s) {unknown}, missing field(s) {missing}; parent and ranks"
                " run different compile_guard versions?"
            )
        try:
            return cls(**raw)
        except RankReportError as exc:
            raise RankReportError(f"{what}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, *, what: str) -> RankReport:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise RankReportError(f"{what} is not JSON ({exc})") from None
        return cls.from_dict(raw, what=what)


_TYPES = {
    "scenario": str,
    "rank": int,
    "role": str,
    "run": dict,
    "effective_backend": dict,
    "warmup": dict,
    "final": dict,
    "quality": dict,
}


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _check(report: RankReport) -> None:
    for name, kind in _TYPES.items():
        value = getattr(report, name)
        if not _is(value, kind):
            raise RankReportError(f"field {name} is {type(value).__name__} {value!r:.60}, expected {kind.__name__}")
    if report.role not in (MESH, DRIVER):
        raise RankReportError(f"field role is {report.role!r}, expected {MESH!r} or {DRIVER!r}")
    if report.role == DRIVER:
        return
    for f in dataclasses.fields(schema.CompileHealth):
        if f.name not in report.final:
            raise RankReportError(f"field final.{f.name} is missing (a metric of this version's schema)")
        value, kind = report.final[f.name], schema.type_of(f.name)
        if not _is(value, kind):
            raise RankReportError(
                f"field final.{f.name} is {type(value).__name__} {value!r:.60}, expected {kind.__name__}"
            )
    for key in schema.SYMMETRIC_KEYS:
        if key not in report.warmup:
            raise RankReportError(f"field warmup.{key} is missing (a symmetric metric of this version's schema)")
