"""What a check rank reports to its parent: one frozen value with typed payloads, canonical JSON both ways, read by
the one typed-JSON reader (compile_guard.contracts.wire).

The way in is `compile_guard.contracts.rank_job.RankJob`; this is the way back. A rank builds one `RankReport`
(compile_guard.ranks.check for the engine, compile_guard.ranks.target for --target) and writes it once, as
`probe-rank{r}.json` (or gathers it over the world group in place); the parent reads it back with `from_json`:
every field and every compile-health metric checked against its type (`health.schema.CompileHealth`), a missing
field or one of the wrong type a `RankReportError` naming the rank, the field and the value seen (the CLI's exit
3: parent and ranks disagree, a bug or a version mix, never a verdict on the code under test).

The payloads: `run` (what the run did: `RunSummary`), `final` (every compile-health metric at the end: the schema's
`CompileHealth`), `quality` (what the compiled code gives its users: `QualityReport`), `effective_backend` (what
`auto` resolved to) and `warmup` (the symmetric metrics after warmup, as the gather compared them). The wire format
is the one every earlier 0.1 version wrote (a driver's `final` and an unmeasured `quality` as `{}`): an old report
still loads. No torch import: the parent reads these.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from compile_guard.contracts import wire
from compile_guard.health import schema

MESH, DRIVER = "mesh", "driver"
FILE = "probe-rank{rank}.json"  # what a launched check rank writes into its --out directory, read by the parent


class RankReportError(wire.WireError):
    """A rank's report that is not what this version writes: names the rank, the field, what was seen."""


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """What one rank's run did: the engine's summary (engine.topology) or a --target's steps. A counter a topology
    does not keep is None, and left out on the wire."""

    chunks_done: list[int] | None = None  # the engine: the chunk indices done
    rejected: list[Any] | None = None  # the driver: chunks the mesh rejected (a preflight's verdict)
    generator_calls: int | None = None  # a mesh rank: calls of the compiled generator
    generator_s: float | None = None  # a mesh rank: seconds in the generator
    digest_s: float | None = None  # seconds digesting envelopes
    fingerprint_s: float | None = None  # seconds fingerprinting the region's graphs after init
    fingerprint_init_s: float | None = None  # seconds fingerprinting them at init
    steps: int | None = None  # --target: the input steps run, warmup and steady state

    @classmethod
    def of(cls, summary: dict[str, Any]) -> RunSummary:
        """A topology's summary (engine.topology.stages: a dict of counters) as a RunSummary; a counter this version
        does not know is left out."""
        return wire.read(cls, summary, what="the run's summary", error=RankReportError)


@dataclass(frozen=True, kw_only=True)
class QualityReport:
    """One rank's quality measurement (compile_guard.quality.measure): each part as its own module reports it,
    None where it was not measured (and left out on the wire)."""

    calls: int = 0  # recorded calls of the compiled region the replays used
    skipped: str | None = None  # why nothing was measured (no call recorded)
    accuracy: dict[str, Any] | None = None  # compiled vs eager vs fp64 per output (quality.accuracy)
    parity: dict[str, Any] | None = None  # replicated outputs compared across ranks (quality.parity)
    speed: dict[str, Any] | None = None  # eager/compiled step times, local and live (quality.speed)
    machine: dict[str, Any] | None = None  # which machine the timings came from (quality.machine)
    memory: dict[str, Any] | None = None  # peak device memory compiled/eager (quality.speed.measure_memory)
    compile_time: dict[str, dict[str, Any]] | None = None  # per cache state (quality.compile_time.summary)
    parts_s: dict[str, float] | None = None  # wall seconds of each part of the measurement
    recompiled: int | None = None  # graphs the measurement's own replays compiled
    wall_s: float | None = None  # the measurement's wall seconds

    @property
    def measured(self) -> bool:
        """Whether there is anything to judge (a skipped measurement has nothing)."""
        return self.skipped is None

    def to_json(self) -> dict[str, Any]:
        return wire.plain(self, drop_none=True)


@dataclass(frozen=True, kw_only=True)
class RankReport:
    scenario: str  # the run spec's name (the scenario, or target-… for --target)
    rank: int  # global rank
    role: str  # MESH: in the symmetric group, probed; DRIVER: pp1's rank 0, out of the mesh, compiles nothing
    run: RunSummary  # what the run did
    effective_backend: dict[str, str] = field(default_factory=dict)  # what `auto` resolved to ({} for the driver)
    # the symmetric metrics after warmup (health.schema.symmetric_view), as the gather compared them ({}: driver)
    warmup: dict[str, Any] = field(default_factory=dict)
    final: schema.CompileHealth | None = None  # every compile-health metric at the end (None for the driver)
    quality: QualityReport | None = None  # None when not measured (off, the driver)

    def __post_init__(self) -> None:
        if self.role not in (MESH, DRIVER):
            raise RankReportError(f"field role is {self.role!r}, expected {MESH!r} or {DRIVER!r}")
        if self.role == MESH and self.final is None:
            raise RankReportError("field final is missing: a mesh rank reports every compile-health metric")

    @property
    def is_mesh(self) -> bool:
        return self.role == MESH

    @property
    def health(self) -> schema.CompileHealth:
        """The final compile health of a mesh rank (the driver has none: an internal error to ask)."""
        assert self.final is not None, f"rank {self.rank} is the driver: it compiles nothing"
        return self.final

    def as_dict(self) -> dict[str, Any]:
        """The report as it travels: the wire format every 0.1 version writes (`{}` where a payload is absent)."""
        data = wire.plain(self)
        data["run"] = wire.plain(self.run, drop_none=True)
        data["final"] = data["final"] or {}
        data["quality"] = self.quality.to_json() if self.quality is not None else {}
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: Any, *, what: str) -> RankReport:
        if not isinstance(raw, dict):
            raise RankReportError(f"{what} is a JSON {type(raw).__name__}, expected an object")
        data = dict(raw)
        for payload in ("final", "quality"):  # `{}`: absent (a driver's, an unmeasured run's)
            if data.get(payload) == {}:
                data[payload] = None
        if data.get("role") == MESH:
            _every_metric(data, what)
        try:
            return wire.read(cls, data, what=what, error=RankReportError, strict=True)
        except RankReportError as exc:
            message = str(exc)
            raise RankReportError(message if message.startswith(what) else f"{what}: {message}") from None

    @classmethod
    def from_json(cls, text: str, *, what: str) -> RankReport:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise RankReportError(f"{what} is not JSON ({exc})") from None
        return cls.from_dict(raw, what=what)


def _every_metric(data: dict[str, Any], what: str) -> None:
    """A mesh rank reports every metric of this version's schema, and every symmetric one after warmup: a metric
    left out is a version mix, never read as its default."""
    final, warmup = data.get("final"), data.get("warmup", {})
    for f in dataclasses.fields(schema.CompileHealth):
        if isinstance(final, dict) and f.name not in final:
            raise RankReportError(f"{what}: field final.{f.name} is missing (a metric of this version's schema)")
    for key in schema.SYMMETRIC_KEYS:
        if isinstance(warmup, dict) and key not in warmup:
            raise RankReportError(
                f"{what}: field warmup.{key} is missing (a symmetric metric of this version's schema)"
            )


def mesh(reports: list[RankReport]) -> list[RankReport]:
    """The symmetric group's reports (pp1: rank0, the driver, compiles nothing)."""
    return [r for r in reports if r.is_mesh]
