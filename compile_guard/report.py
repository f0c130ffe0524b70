"""A check run judged: against a baseline (rows, verdicts, the text a person reads), or as a failure.

`judge` diffs a run's per-rank metrics against a stored baseline with the direction policy;
`failure_report` explains a run that produced no probes (asymmetry, input error, engine
failure). Both return the exit code, the text and everything for --json.
"""

from __future__ import annotations

import json
import linecache
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from compile_guard.check_run import CheckRun
from compile_guard.health import baseline as bl
from compile_guard.health import policy
from engine import events
from engine.errors import (
    CollectiveMismatch,
    CompileAsymmetry,
    CompileDivergence,
    CompileFailed,
    InputSignatureMismatch,
    ParityMismatch,
    Stalled,
)

# 4: a stall — a rank held at an agreement while a peer made no progress: no proof the ranks differ (not 1),
# and not an engine failure of ours (3): every rank's position is in the report
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ENGINE, EXIT_STALL = 0, 1, 2, 3, 4
REPO = Path(__file__).resolve().parent.parent
# rank exits meaning "the ranks differ"
ASYMMETRY_CODES = (ParityMismatch.exit_code, CompileAsymmetry.exit_code, InputSignatureMismatch.exit_code,
                   CompileDivergence.exit_code, CollectiveMismatch.exit_code)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Report:
    exit_code: int
    text: str
    data: dict[str, Any] = field(default_factory=dict)  # everything, for --json


def interrupted_exit(signum: int) -> int:
    """128 + the signal, as a shell reports a process ended by it (130 SIGINT, 143 SIGTERM, 129 SIGHUP)."""
    return 128 + signum


def _progress(log_path: Path) -> str:
    """How far a run got, from the followed rank's events (for a partial report)."""
    found = events.parse(log_path.read_text(errors="replace")) if log_path.exists() else []
    shakes = [e["handshake"] for e in found if e["event"] == "parity_ok"]
    warm = any(e.get("phase") == "warmup_done" for e in found)
    steady = sum(e.get("phase") == "steady" for e in found)
    return (f"handshakes passed: {', '.join(shakes) or 'none'}; warmup {'done' if warm else 'not done'};"
            f" steady chunks done: {steady}")  # fmt: skip


def failure_report(run: CheckRun) -> Report:
    """A run that produced no probes: interrupted (128+signal), input error (2), asymmetry (1),
    compile error or engine failure or deadline (3)."""
    result = run.result
    culprit = result.ranks[result.first_failed if result.first_failed is not None else 0]
    codes = {r.rank: r.returncode for r in result.ranks}
    data = {"exit_codes": codes, "log_dir": str(run.log_dir)}
    if result.outcome == "interrupted":
        name = signal.Signals(result.interrupted_by).name
        text = (f"interrupted by {name} after {result.duration_s:.1f}s: every rank was killed, nothing judged;"
                f" {_progress(result.ranks[0].log_path)} (logs: {run.log_dir})")  # fmt: skip
        return Report(exit_code=interrupted_exit(result.interrupted_by), text=text,
                      data={**data, "verdict": "interrupted", "signal": name})  # fmt: skip
    if result.outcome == "rank_failed" and all(c == EXIT_USAGE for c in codes.values()):
        # every rank refused its input (a target whose factory raised or returned the wrong thing)
        errors = [line for line in culprit.log_tail.splitlines() if "configuration error" in line]
        text = (errors[-1].split("configuration error: ", 1)[-1] if errors else culprit.log_tail)
        return Report(exit_code=EXIT_USAGE, text=f"input error: {text}", data={**data, "verdict": "input error"})
    exits = "\n".join(result.summary().splitlines()[1:])
    stalled = [r for r in result.ranks if r.returncode == Stalled.exit_code]
    if result.outcome == "rank_failed" and stalled and all(c in (Stalled.exit_code, None) for c in codes.values()):
        # every rank that could exit exited with the stall; a frozen one was killed by the launcher
        first = min(stalled, key=lambda r: r.failed_at_s if r.failed_at_s is not None else float("inf"))
        text = f"stall: {first.failure or first.log_tail}\n{exits}"
        return Report(exit_code=EXIT_STALL, text=text, data={**data, "verdict": "stall"})
    if result.outcome == "rank_failed" and all(c in ASYMMETRY_CODES for c in codes.values()):
        # the culprit's own record holds the per-rank table (and break sites): printed once
        text = f"cross-rank asymmetry: {culprit.failure or culprit.log_tail}\n{exits}"
        return Report(exit_code=EXIT_FAIL, text=text, data={**data, "verdict": "cross-rank asymmetry"})
    compiled = [r for r in result.ranks if r.returncode == CompileFailed.exit_code]
    if compiled:
        first = min(compiled, key=lambda r: r.failed_at_s if r.failed_at_s is not None else float("inf"))
        text = (f"compile error on rank {first.rank}: {first.failure}\n{exits}\n"
                f"(full traceback in {first.log_path})")  # fmt: skip
        return Report(exit_code=EXIT_ENGINE, text=text, data={**data, "verdict": "compile error"})
    kind = f"engine failure ({result.outcome})"
    tail = f"--- log tail of rank {culprit.rank} ({culprit.log_path}) ---\n{culprit.log_tail}"
    text = f"{kind}: {result.summary()}\n{tail}"
    return Report(exit_code=EXIT_ENGINE, text=text, data={**data, "verdict": kind})


def _source_around(site: str, context: int = 2) -> str:
    file, _, line = site.rpartition(":")
    path = REPO / file
    if not path.exists() or not line.isdigit():
        return ""
    n = int(line)
    return "\n".join(
        f"    {'>' if i == n else ' '} {i:4d} | {linecache.getline(str(path), i).rstrip()}"
        for i in range(max(1, n - context), n + context + 1)
        if linecache.getline(str(path), i)
    )


TABLE_WIDTH = 120  # the terminal table; --json has every value whole
_METRIC_WIDTH, _VERDICT_WIDTH = 44, 11


def _cell(value: Any, width: int) -> str:
    text = str(value if isinstance(value, (int, float, str)) else json.dumps(value, sort_keys=True))
    if len(text) > width and text.startswith(f"{policy.RANK_VARYING}: "):  # the end names the op and argument
        return f"{policy.RANK_VARYING}: ...{text[len(text) - width + len(policy.RANK_VARYING) + 5:]}"
    return text if len(text) <= width else text[: width - 3] + "..."


def metric_table(rows: list[policy.Row], ranks: list[str]) -> str:
    """metric | baseline | rank... | verdict, cut to TABLE_WIDTH columns."""
    columns = 1 + len(ranks)
    width = max(8, (TABLE_WIDTH - _METRIC_WIDTH - _VERDICT_WIDTH - 2 * (columns + 1)) // columns)
    body = [[_cell(r.metric, _METRIC_WIDTH), _cell(r.baseline, width), *(_cell(v, width) for v in r.per_rank),
             r.verdict] for r in rows]  # fmt: skip
    return tabulate(body, headers=["metric", "baseline", *ranks, "verdict"], disable_numparse=True)


def _context_lines(run: CheckRun, base: bl.Baseline, exact: bool, factors: dict[str, Any]) -> list[str]:
    lines = []
    if not exact:
        lines.append(f"torch version change: baseline {base.factors['torch']} -> running {factors['torch']}"
                     " (compared across versions; refresh to store this version's baseline)")  # fmt: skip
    lines.extend(f"note: {note}" for note in base.notes)
    drivers = [p["rank"] for p in run.probes if p.get("role") == "driver"]
    if drivers:
        lines.append(f"rank{drivers[0]}: the driver, out of the mesh; compiles nothing, so it is reported apart"
                     f" (chunks done {run.probes[drivers[0]]['run']['chunks_done']})")  # fmt: skip
    return lines


def _detail_lines(run: CheckRun, rows: list[policy.Row], ranks: list[str]) -> list[str]:
    lines = []
    empty = next((r for r in rows if r.metric == policy.NOTHING_COMPILED), None)
    if empty is not None:
        named = [rank for rank, graphs in zip(ranks, empty.per_rank, strict=True) if graphs == 0]
        lines.append(f"compile is on, yet {', '.join(named)} compiled no graph: compile did not happen"
                     " (TORCH_COMPILE_DISABLE=1 on every rank? a backend that fell back to eager?)")  # fmt: skip
    sites = run.mesh_probes()[0]["final"]["break_sites"]
    if sites:
        lines.append("graph-break sites (rank 0):")
        for s in sites:
            lines.append(f"  {s['site']}  {s['reason']}  x{s['count']}")
            lines.append(_source_around(s["site"]))
    varying = run.mesh_probes()[0]["final"].get("rank_varying_sites") or []
    if varying:
        lines.append("rank-varying constants (legitimate SPMD code, e.g. vocab offsets; a site not in the baseline"
                     " fails):")  # fmt: skip
        lines.extend(f"  {c['site']}  {c['key']}: " + ", ".join(f"rank{r}={v}" for r, v in c["values"].items())
                     for c in varying)  # fmt: skip
    for rec in run.mesh_probes()[0]["steady_recompile_reasons"]:
        lines.append(f"recompile after warmup: {rec['frame']} at {rec['site']}: {rec['reason']}")
    return lines


def judge(run: CheckRun, base: bl.Baseline, base_path: Path, exact: bool, *,
          allow_improvement: bool, strict: bool) -> Report:  # fmt: skip
    per_rank = run.metrics()
    rows = policy.compare(base.metrics, per_rank)
    rows += policy.nothing_compiled(per_rank, compile_on=run.spec.compile != "off")
    passed, problems = policy.outcome(rows, allow_improvement=allow_improvement, strict=strict)
    factors = run.factors()
    ranks = [f"rank{p['rank']}" for p in run.mesh_probes()]
    lines = [f"scenario {factors['scenario']}: {run.spec.description}", f"baseline {base_path}",
             *_context_lines(run, base, exact, factors), metric_table(rows, ranks), *_detail_lines(run, rows, ranks)]
    refresh = f"python -m compile_guard baseline refresh --scenario {factors['scenario']}"
    if passed:
        lines.append("PASS")
    else:
        lines.extend(f"FAIL {p}" for p in problems)
        if any(r.verdict == policy.IMPROVEMENT for r in rows) and not allow_improvement:
            lines.append(f"fewer breaks/graphs than the baseline: run `{refresh}` (or pass --allow-improvement)")
        elif any(r.verdict == policy.REGRESSION for r in rows):
            lines.append(f"if this change is intended, run `{refresh}` and commit the new baseline")
    data = {
        "factors": factors, "baseline": str(base_path), "baseline_factors": base.factors, "exact_baseline": exact,
        "rows": [r.__dict__ for r in rows], "problems": problems, "passed": passed, "probes": run.probes,
        "failing_metrics": [r.metric for r in policy.failing(rows, allow_improvement=allow_improvement,
                                                             strict=strict)],
        "log_dir": str(run.log_dir),
    }  # fmt: skip
    return Report(exit_code=EXIT_OK if passed else EXIT_FAIL, text="\n".join(lines), data=data)
