"""`assert_compile_health`: per-rank compile-health metrics against a baseline file, as an assertion.

A public name (`from compile_guard import assert_compile_health`), usable in any test runner or script:
it imports no pytest (the plugin, compile_guard.commands.pytest_plugin, re-exports it for its fixtures' users).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compile_guard.health import baseline as bl
from compile_guard.health import policy


def assert_compile_health(
    metrics: dict[str, Any] | list[dict[str, Any]],
    baseline: str | Path,
    *,
    allow_improvement: bool = False,
    strict: bool = False,
) -> None:
    """Gate per-rank compile-health metrics (a probe's `final` + `steady_recompiles` + `effective_backend`,
    or a list of them) against a baseline file with the check's policy; AssertionError with the table."""
    base = bl.load(Path(baseline))
    per_rank = metrics if isinstance(metrics, list) else [metrics]
    rows = policy.compare(base.metrics, per_rank)
    passed, problems = policy.outcome(rows, allow_improvement=allow_improvement, strict=strict)
    if not passed:
        moved = [r for r in rows if r.verdict != policy.OK]
        table = "\n".join(f"  {r.metric}: {r.baseline} -> {r.per_rank} ({r.verdict})" for r in moved)
        raise AssertionError(f"compile health regressed against {baseline}:\n{table}\n" + "\n".join(problems))
