"""A check's report: a judgement rendered (the text a person reads, the JSON everything else reads), or a run
that failed explained.

`report_of` renders what compile_guard.flow.judge decided — rows and verdicts, nothing decided here;
`failure_report` explains a run that produced no reports, as compile_guard.verdict decides it (asymmetry, input
error, stall, compile error, engine failure). Both return the exit code, the text and everything for --json; the
page and the Markdown summary are rendered from that JSON (compile_guard.page).
"""

from __future__ import annotations

import dataclasses
import json
import linecache
import signal
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from compile_guard import verdict
from compile_guard.contracts.rank_report import mesh
from compile_guard.flow.check_run import CheckRun
from compile_guard.flow.judge import Judgement
from compile_guard.health import policy
from compile_guard.launch.launcher import LaunchResult
from compile_guard.page import render
from compile_guard.page.check_page import check_page
from compile_guard.page.model import Page
from compile_guard.quality.options import Judging
from compile_guard.verdict import Cli
from engine import events

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class Report:
    exit_code: int  # the CLI's (compile_guard.verdict.Cli), stored as a plain int
    text: str
    data: dict[str, Any] = field(default_factory=dict)  # everything, for --json

    def __post_init__(self) -> None:
        object.__setattr__(self, "exit_code", int(self.exit_code))  # prints as a number on every Python


def _progress(log_path: Path) -> str:
    """How far a run got, from the followed rank's events (for a partial report)."""
    found = events.parse(log_path.read_text(errors="replace")) if log_path.exists() else []
    shakes = [e["handshake"] for e in found if e["event"] == "parity_ok"]
    warm = any(e.get("phase") == "warmup_done" for e in found)
    steady = sum(e.get("phase") == "steady" for e in found)
    return (
        f"handshakes passed: {', '.join(shakes) or 'none'}; warmup {'done' if warm else 'not done'};"
        f" steady chunks done: {steady}"
    )


def outcomes(result: LaunchResult) -> list[verdict.RankOutcome]:
    """How each rank of a self-launched run ended, for `verdict.decide`."""
    return [
        verdict.RankOutcome(
            rank=r.rank,
            code=r.returncode,
            signal=r.signal,
            killed=r.killed_by_launcher,
            failed_at_s=r.failed_at_s if r.failure else None,
        )
        for r in result.ranks
    ]


def decided(result: LaunchResult) -> verdict.Verdict:
    interrupted_by = result.interrupted_by if result.outcome == "interrupted" else None
    return verdict.decide(outcomes(result), deadline=result.outcome == "deadline", interrupted_by=interrupted_by)


def failure_report(run: CheckRun) -> Report:
    """A run that produced no probes, as `verdict.decide` classes it: the text names the culprit and its error.
    In place, the code is this rank's, settled with its peers (the ranks' logs say why)."""
    result = run.result
    if result is None:
        return Report(
            exit_code=run.code,
            text=f"check {run.job.name}: failed, exit {run.code}, the same on every"
            " rank (settled with the peers); each rank's log above says why",
            data={"verdict": "failed in place", "exit_code": run.code},
        )
    decision = decided(result)
    codes = {r.rank: r.returncode for r in result.ranks}
    data = {"exit_codes": codes, "log_dir": str(run.log_dir), "verdict": decision.label, "culprit": decision.culprit}
    if decision.label == verdict.INTERRUPTED:
        name = signal.Signals(result.interrupted_by).name
        text = (
            f"interrupted by {name} after {result.duration_s:.1f}s: every rank was killed, nothing judged;"
            f" {_progress(result.ranks[0].log_path)} (logs: {run.log_dir})"
        )
        return Report(exit_code=decision.code, text=text, data={**data, "signal": name})
    culprit = result.ranks[decision.culprit if decision.culprit is not None else (result.first_failed or 0)]
    exits = "\n".join(result.summary().splitlines()[1:])
    said = culprit.failure or culprit.log_tail
    if decision.label == verdict.INPUT_ERROR:
        errors = [line for line in culprit.log_tail.splitlines() if "configuration error" in line]
        text = errors[-1].split("configuration error: ", 1)[-1] if errors else said
        return Report(exit_code=decision.code, text=f"input error on rank {culprit.rank}: {text}", data=data)
    if decision.label in (verdict.STALL, verdict.ASYMMETRIC):
        # the culprit's own record holds the per-rank table (and break sites): printed once
        return Report(exit_code=decision.code, text=f"{decision.label}: {said}\n{exits}", data=data)
    if decision.label == verdict.COMPILE_ERROR:
        text = (
            f"compile error on rank {culprit.rank}: {culprit.failure}\n{exits}\n(full traceback in {culprit.log_path})"
        )
        return Report(exit_code=decision.code, text=text, data=data)
    kind = decision.label if decision.label == verdict.DEADLINE else f"{decision.label} ({result.outcome})"
    tail = f"--- log tail of rank {culprit.rank} ({culprit.log_path}) ---\n{culprit.log_tail}"
    return Report(exit_code=decision.code, text=f"{kind}: {result.summary()}\n{tail}", data={**data, "verdict": kind})


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
        return f"{policy.RANK_VARYING}: ...{text[len(text) - width + len(policy.RANK_VARYING) + 5 :]}"
    return text if len(text) <= width else text[: width - 3] + "..."


def metric_table(rows: list[policy.Row], ranks: list[str]) -> str:
    """metric | baseline | rank... | verdict, cut to TABLE_WIDTH columns."""
    columns = 1 + len(ranks)
    width = max(8, (TABLE_WIDTH - _METRIC_WIDTH - _VERDICT_WIDTH - 2 * (columns + 1)) // columns)
    body = [
        [_cell(r.metric, _METRIC_WIDTH), _cell(r.baseline, width), *(_cell(v, width) for v in r.per_rank), r.verdict]
        for r in rows
    ]
    return tabulate(body, headers=["metric", "baseline", *ranks, "verdict"], disable_numparse=True)


def _context_lines(j: Judgement) -> list[str]:
    lines = []
    base = j.found.baseline
    if not j.found.exact:
        lines.append(
            f"torch version change: baseline {base.factors.torch} -> running {j.factors.torch}"
            " (compared across versions; refresh to store this version's baseline)"
        )
    lines.extend(f"note: {note}" for note in base.notes)
    drivers = [r for r in j.reports if not r.is_mesh]
    if drivers:
        lines.append(
            f"rank{drivers[0].rank}: the driver, out of the mesh; compiles nothing, so it is reported apart"
            f" (chunks done {drivers[0].run.chunks_done})"
        )
    lines.extend(f"note: {n}" for n in j.renames)
    return lines


def _detail_lines(j: Judgement) -> list[str]:
    lines = []
    empty = next((r for r in j.health if r.metric == policy.NOTHING_COMPILED), None)
    if empty is not None:
        named = [rank for rank, graphs in zip(j.ranks, empty.per_rank, strict=True) if graphs == 0]
        lines.append(
            f"compile is on, yet {', '.join(named)} compiled no graph: compile did not happen"
            " (TORCH_COMPILE_DISABLE=1 on every rank? a backend that fell back to eager?)"
        )
    final = mesh(j.reports)[0].health
    if final.break_sites:
        lines.append("graph-break sites (rank 0):")
        for s in final.break_sites:
            lines.append(f"  {s['site']}  {s['reason']}  x{s['count']}")
            lines.append(_source_around(s["site"]))
    if final.rank_varying_sites:
        lines.append(
            "rank-varying constants (legitimate SPMD code, e.g. vocab offsets; a site not in the baseline fails):"
        )
        lines.extend(
            f"  {c['site']}  {c['key']}: " + ", ".join(f"rank{r}={v}" for r, v in c["values"].items())
            for c in final.rank_varying_sites
        )
    for rec in final.steady_recompile_reasons:
        lines.append(f"recompile after warmup: {rec['frame']} at {rec['site']}: {rec['reason']}")
    for r in j.health:  # the table cuts a moved issued schedule's name: here whole
        if r.metric.startswith("issued: ") and r.verdict != policy.OK:
            lines += textwrap.wrap(f"{r.metric} ({r.verdict})", width=TABLE_WIDTH, subsequent_indent="    ")
    return lines


def _verdict_lines(j: Judgement) -> list[str]:
    if j.passed:
        return ["PASS"]
    lines = [f"FAIL {p}" for p in j.problems]
    if any(r.verdict == policy.IMPROVEMENT for r in j.rows) and not j.allow_improvement:
        lines.append(f"fewer breaks/graphs than the baseline: run `{j.refresh}` (or pass --allow-improvement)")
    elif any(r.verdict == policy.REGRESSION for r in j.rows):
        lines.append(f"if this change is intended, run `{j.refresh}` and commit the new baseline")
    return lines


def text_of(j: Judgement) -> str:
    """What a person reads: the context, the compile-health table and its details, the quality table and its
    lines, the verdict and the command that would store this run's baseline."""
    lines = [
        f"scenario {j.factors.scenario}: {j.job.spec.description}",
        f"baseline {j.found.path}",
        *_context_lines(j),
        metric_table(j.health, j.ranks),
        *_detail_lines(j),
    ]
    if j.quality:
        lines += ["", metric_table(j.quality, j.ranks)]
        lines += [
            part for line in j.quality_lines for part in textwrap.wrap(line, TABLE_WIDTH, subsequent_indent="    ")
        ]
    return "\n".join(lines + _verdict_lines(j))


def data_of(j: Judgement, *, judging: Judging, log_dir: Path | None) -> dict[str, Any]:
    """Everything, for --json (and the page, compile_guard.page, which reads only this)."""
    base = j.found.baseline
    return {
        "factors": j.factors.as_dict(),
        "baseline": str(j.found.path),
        "baseline_factors": base.factors.as_dict(),
        "exact_baseline": j.found.exact,
        "rows": [r.__dict__ for r in j.rows],
        "problems": j.problems,
        "passed": j.passed,
        "probes": [r.as_dict() for r in j.reports],
        "failing_metrics": j.failing,
        "log_dir": str(log_dir),
        "quality_lines": j.quality_lines,
        "timings": j.timings,  # per rank: what each timing test found (ratio, p, mde, judged, why not)
        "judging": dataclasses.asdict(judging),  # the thresholds that decided the timing rows
        "baseline_quality": base.quality,  # per rank: what the baseline stored (the page plots it beside the run)
    }


def report_of(j: Judgement, *, judging: Judging, log_dir: Path | None) -> Report:
    """The judgement rendered: its exit code, its text, its JSON."""
    return Report(
        exit_code=Cli.OK if j.passed else Cli.FAIL, text=text_of(j), data=data_of(j, judging=judging, log_dir=log_dir)
    )


def markdown_summary(scenario: str, report: Report) -> str:
    """The report as Markdown for a CI job's summary page (GitHub's $GITHUB_STEP_SUMMARY, say), rendered from the
    same page model as `--html` (compile_guard.page), so the two never disagree."""
    return render.markdown(page_of(report, scenario))


def page_of(report: Report, scenario: str = "") -> Page:
    """The report's page model (compile_guard.page.check_page)."""
    data = report.data if "scenario" in report.data or not scenario else {**report.data, "scenario": scenario}
    return check_page(data, exit_code=report.exit_code, text=report.text)
