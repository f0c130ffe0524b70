"""Stored baselines: JSON files keyed by named factors, written atomically.

A baseline records what one scenario compiled to on one torch version, device type and
backend. The factors are written *into* the file and into its name, so a mismatch
explains itself. Format: sorted keys, one fact a line, schema-versioned; break reasons
normalised (registry id + title). Writes go to a unique temp file in the same directory,
then `os.replace`: concurrent refreshes never leave a torn file, the last one wins whole.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compile_guard.contracts import wire
from compile_guard.contracts.rank_report import RankReport, mesh
from compile_guard.health import schema
from compile_guard.quality.rules import baseline_entry, pool_runs
from engine.atomic_json import write_text

if TYPE_CHECKING:
    from compile_guard.contracts.rank_job import RankJob

SCHEMA = 1


@dataclass(frozen=True, kw_only=True)
class Factors:
    """What a baseline is keyed by: in its file name and inside it. Known before a run (`expected`, to find the
    baseline) and read from its reports after (`observed`, to write one); both name the same file."""

    scenario: str  # the run spec's name (a scenario, or target-... for --target)
    torch: str  # torch.__version__ with its local part (2.14.1+cu130)
    device_type: str  # cpu / cuda
    compile_backend: str  # inductor / aot_eager / eager / off
    dist_backend: str  # gloo / nccl
    world_size: int  # ranks in the job
    config_hash: str  # RankJob.config_hash(): a baseline of another configuration is refused, never compared

    @classmethod
    def expected(cls, job: RankJob, *, device_type: str | None = None) -> Factors:
        """The factors a run of `job` will report, before launching it (`device_type` auto asks torch)."""
        spec = job.spec
        if device_type is None:
            device_type = spec.device if spec.device != "auto" else spec.dist_config().resolved_device_type()
        dist_backend = spec.dist_backend
        if dist_backend == "auto":
            dist_backend = "nccl" if device_type == "cuda" else "gloo"
        return cls(
            scenario=spec.name,
            torch=installed_torch(),
            device_type=device_type,
            compile_backend=spec.compile,
            dist_backend=dist_backend,
            world_size=spec.nprocs,
            config_hash=job.config_hash(),
        )

    @classmethod
    def observed(cls, job: RankJob, reports: list[RankReport]) -> Factors:
        """The factors a run reported: what its symmetric group's first rank resolved (its `effective_backend`)."""
        effective_backend = mesh(reports)[0].effective_backend
        return cls(
            scenario=job.name,
            torch=effective_backend["torch"],
            device_type=effective_backend["device_type"],
            compile_backend=effective_backend["compile_backend"],
            dist_backend=effective_backend["dist_backend"],
            world_size=job.spec.nprocs,
            config_hash=job.config_hash(),
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FACTOR_KEYS = tuple(f.name for f in dataclasses.fields(Factors))
MAX_BYTES = 1 << 20  # a baseline is a few KiB; anything near this is not one
METRIC_KEYS = schema.BASELINE_KEYS  # the schema's counted, per-reason and reported metrics
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "baselines"


class BaselineError(Exception):
    """A baseline file that cannot be used: names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True, kw_only=True)
class Baseline:
    factors: Factors  # what it is a baseline of: in its file name and inside it
    metrics: dict[str, Any]  # METRIC_KEYS -> value (health.schema.CompileHealth's judged metrics)
    break_sites: list[dict[str, Any]]  # for the report: where breaks were, when recorded
    # per rank ("rank0", ...): accuracy statuses, speed samples, compile-time ratios per cache state, memory
    # (compile_guard.quality.rules.baseline_entry); {} in a file written before quality was measured
    quality: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what loading had to assume (metrics newer than the file); never written

    @classmethod
    def of(cls, job: RankJob, reports: list[RankReport]) -> Baseline:
        """The baseline a run's reports make. The ranks were proven symmetric after warmup: rank 0 of the mesh
        speaks for the group's compile health; each rank keeps its own quality (compile_guard.quality.rules)."""
        ranks = mesh(reports)
        return cls(
            factors=Factors.observed(job, reports),
            metrics=schema.baseline_view(ranks[0].health),
            break_sites=ranks[0].health.break_sites,
            quality={f"rank{r.rank}": baseline_entry(r.quality) for r in ranks if r.quality is not None},
        )

    @classmethod
    def pooled(cls, job: RankJob, runs: list[list[RankReport]]) -> Baseline:
        """One baseline from several runs of one spec (`baseline refresh --runs`): the first run's structure, every
        run's timings, so the machine's noise is measured from their spread (quality.rules.pool_runs)."""
        first = cls.of(job, runs[0])
        if len(runs) == 1:
            return first
        return dataclasses.replace(first, quality=pool_runs([cls.of(job, r).quality for r in runs]))

    def moved_from(self, other: Baseline) -> list[str]:
        """The metrics whose value differs from `other`'s (two runs of one program must not move any)."""
        return [k for k in self.metrics if self.metrics[k] != other.metrics.get(k)]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "factors": self.factors.as_dict(),
            "metrics": self.metrics,
            "break_sites": self.break_sites,
            "quality": self.quality,
        }


def installed_torch() -> str:
    """torch.__version__ as a run will report it (with its local part, 2.14.1+cu130), without importing
    torch: read as text from torch/version.py, which the wheel writes; the package metadata drops the
    local part on some builds."""
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.origin is not None:
        version_file = Path(spec.origin).parent / "version.py"
        found = (
            re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.M)
            if version_file.is_file()
            else None
        )
        if found:
            return found.group(1)
    return importlib.metadata.version("torch")


def file_name(factors: Factors | dict[str, Any]) -> str:
    factors = factors.as_dict() if isinstance(factors, Factors) else factors
    torch_version = re.sub(r"[^0-9A-Za-z.]+", "_", str(factors["torch"]))
    return (
        f"{factors['scenario']}__torch-{torch_version}__{factors['device_type']}__{factors['compile_backend']}"
        f"__{factors['dist_backend']}__ws{factors['world_size']}.json"
    )


def dumps(baseline: Baseline) -> str:
    return json.dumps(baseline.to_json(), indent=1, sort_keys=True) + "\n"


def write(path: Path, baseline: Baseline) -> None:
    """Atomically replace `path` with `baseline` (temp file in the same dir, fsync, rename)."""
    write_text(path, dumps(baseline))


def _read(path: Path) -> str:
    """The file's text: a regular file of at most MAX_BYTES (a FIFO or device would block or flood)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise BaselineError(path, "no such file") from None
    except OSError as exc:
        raise BaselineError(path, f"cannot stat it ({exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise BaselineError(path, "is not a regular file (a FIFO, device or directory?); point at a baseline .json")
    if info.st_size > MAX_BYTES:
        raise BaselineError(path, f"is {info.st_size} bytes, over the {MAX_BYTES} a baseline may have")
    with open(path, "rb") as f:
        return f.read(MAX_BYTES + 1).decode()


def load(path: Path) -> Baseline:
    try:
        raw = json.loads(_read(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BaselineError(path, f"not valid JSON ({exc}); delete it and run `baseline refresh`") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        seen = raw.get("schema") if isinstance(raw, dict) else type(raw).__name__
        raise BaselineError(path, f"schema {seen!r} is not {SCHEMA}; regenerate it with `baseline refresh`")
    factors = raw.get("factors")
    if not isinstance(factors, dict) or sorted(set(FACTOR_KEYS) - set(factors)):
        missing = sorted(set(FACTOR_KEYS) - set(factors)) if isinstance(factors, dict) else list(FACTOR_KEYS)
        raise BaselineError(path, f"'factors' lacks {missing}; regenerate it with `baseline refresh`")
    if not isinstance(raw.get("metrics"), dict):
        raise BaselineError(path, "'metrics' must be an object; regenerate it with `baseline refresh`")
    try:
        typed = wire.read(Factors, factors, what="factors")
    except wire.WireError as exc:
        raise BaselineError(path, f"{exc}; fix or delete the file, then `baseline refresh`") from None
    sites = raw.get("break_sites")
    if not isinstance(sites, list) or not all(isinstance(s, dict) for s in sites):
        raise BaselineError(path, "'break_sites' must be a list of objects; regenerate it with `baseline refresh`")
    metrics, notes = _metrics(path, raw["metrics"])
    quality = raw.get("quality", {})
    if not isinstance(quality, dict) or not all(isinstance(v, dict) for v in quality.values()):
        raise BaselineError(
            path, "'quality' must be an object of per-rank objects; regenerate it with `baseline refresh`"
        )
    if "quality" not in raw:
        notes.append(
            f"{path.name} predates quality (accuracy, speed, compile time): not in baseline, reported,"
            " never a failure (refresh to record it)"
        )
    return Baseline(factors=typed, metrics=metrics, break_sites=raw["break_sites"], quality=quality, notes=tuple(notes))


def _metrics(path: Path, stored: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Every schema metric: stored ones type-checked (the schema's types, by the one reader), newer ones at their
    default with a note."""
    known = {key: stored[key] for key in METRIC_KEYS if key in stored}
    try:
        health = wire.read(schema.CompileHealth, known, what="metrics")
    except wire.WireError as exc:
        raise BaselineError(path, f"{exc}; fix or delete the file, then `baseline refresh`") from None
    notes = []
    for key in METRIC_KEYS:
        if key not in stored:
            notes.append(
                f"{path.name} predates metric {key!r}: read as {getattr(health, key)!r} (refresh to record it)"
            )
            if key == "rank_varying_constants":  # it came with structural fingerprints
                notes.append(
                    f"{path.name} holds graph fingerprints of the graph's code; they hash its structure now"
                    " (constants and the rank's own device left out): 'changed' until refreshed"
                )
    return schema.baseline_view(health), notes


def find(directory: Path, factors: Factors | dict[str, Any]) -> tuple[Path, bool] | None:
    """The baseline for `factors`: (path, exact). Not exact = another torch version."""
    factors = factors.as_dict() if isinstance(factors, Factors) else factors
    exact = directory / file_name(factors)
    if exact.exists():
        return exact, True
    others = sorted(
        (
            p
            for p in directory.glob(f"{factors['scenario']}__torch-*.json")
            if p.name.endswith(
                f"__{factors['device_type']}__{factors['compile_backend']}__{factors['dist_backend']}"
                f"__ws{factors['world_size']}.json"
            )
        ),
        key=lambda p: version_key(p.name.split("__")[1].removeprefix("torch-")),
    )
    return (others[-1], False) if others else None


def lookup(directory: Path, job: RankJob) -> tuple[Path, bool, Baseline] | str:
    """The baseline a run of `job` is judged against, loaded: (path, exact, baseline); else the file name looked
    for. BaselineError when the file found cannot be used."""
    factors = Factors.expected(job)
    found = find(directory, factors)
    if found is None:
        return file_name(factors)
    return found[0], found[1], load(found[0])


def version_key(version: str) -> tuple[tuple[int, ...], str]:
    """'2.12.0_cpu' sorts after '2.9.0_cpu': release numbers as numbers, the local part as text."""
    release = re.split(r"[+_]", version, maxsplit=1)[0]
    return tuple(int(n) for n in re.findall(r"\d+", release)), version
