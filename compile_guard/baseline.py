"""Stored baselines: JSON files keyed by named factors, written atomically.

A baseline records what one scenario compiled to on one torch version, device type and
backend. The factors are written *into* the file and into its name, so a mismatch
explains itself. Format: sorted keys, one fact a line, schema-versioned; break reasons
normalised (registry id + title). Writes go to a unique temp file in the same directory,
then `os.replace`: concurrent refreshes never leave a torn file, the last one wins whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.atomic_json import write_text

SCHEMA = 1
FACTOR_KEYS = ("scenario", "torch", "device_type", "compile_backend", "dist_backend", "world_size", "config_hash")
METRIC_KEYS = (
    "unique_graphs", "graph_breaks", "recompiles", "steady_recompiles", "break_reasons", "graph_fingerprints",
    "collectives_in_graphs", "guard_count", "graph_ops", "effective_backend",
)  # fmt: skip
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "baselines"


class BaselineError(Exception):
    """A baseline file that cannot be used: names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True, kw_only=True)
class Baseline:
    factors: dict[str, Any]  # FACTOR_KEYS -> value
    metrics: dict[str, Any]  # METRIC_KEYS -> value
    break_sites: list[dict[str, Any]]  # for the report: where breaks were, when recorded

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "factors": self.factors, "metrics": self.metrics, "break_sites": self.break_sites}


def file_name(factors: dict[str, Any]) -> str:
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


def load(path: Path) -> Baseline:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise BaselineError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BaselineError(path, f"not valid JSON ({exc}); delete it and run `baseline refresh`") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        seen = raw.get("schema") if isinstance(raw, dict) else type(raw).__name__
        raise BaselineError(path, f"schema {seen!r} is not {SCHEMA}; regenerate it with `baseline refresh`")
    for section, keys in (("factors", FACTOR_KEYS), ("metrics", METRIC_KEYS)):
        if not isinstance(raw.get(section), dict) or sorted(set(keys) - set(raw[section])):
            missing = sorted(set(keys) - set(raw.get(section) or {})) if isinstance(raw.get(section), dict) else keys
            raise BaselineError(path, f"'{section}' lacks {list(missing)}; regenerate it with `baseline refresh`")
    if not isinstance(raw.get("break_sites"), list):
        raise BaselineError(path, "'break_sites' must be a list; regenerate it with `baseline refresh`")
    return Baseline(factors=raw["factors"], metrics=raw["metrics"], break_sites=raw["break_sites"])


def find(directory: Path, factors: dict[str, Any]) -> tuple[Path, bool] | None:
    """The baseline for `factors`: (path, exact). Not exact = another torch version."""
    exact = directory / file_name(factors)
    if exact.exists():
        return exact, True
    others = sorted(
        p for p in directory.glob(f"{factors['scenario']}__torch-*.json")
        if p.name.endswith(
            f"__{factors['device_type']}__{factors['compile_backend']}__{factors['dist_backend']}"
            f"__ws{factors['world_size']}.json"
        )
    )  # fmt: skip
    return (others[-1], False) if others else None
