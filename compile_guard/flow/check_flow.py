"""The check flow, once: a request in, one report out — its baseline → its ranks run → judged.

`run_and_judge(request, mode)` is what `check`, `baseline refresh`, the matrix's check rows, the pytest
plugin and the GPU smoke script all call; each does only its own part after it (print and write files; write
the new baseline; compare the verdict with the row's; fail the test). The steps, in the order they run:
flow/request.py (the request, its baseline), flow/check_run.py (the ranks, through the run mode),
flow/judge.py (the typed reports against the baseline: judged rows), flow/report.py (those rows rendered, or a
failed run explained).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from compile_guard.contracts.rank_report import RankReportError
from compile_guard.flow.check_run import CheckRun, run_ranks
from compile_guard.flow.judge import judge
from compile_guard.flow.report import Report, failure_report, report_of
from compile_guard.flow.request import CheckRequest, NoBaseline, find_baseline
from compile_guard.health import baseline as bl
from compile_guard.launch.modes import RunMode
from compile_guard.verdict import Cli
from engine import knobs


@dataclass(frozen=True, kw_only=True)
class Judged:
    report: Report  # exit code, text, data for --json
    run: CheckRun | None  # None when nothing ran (no usable baseline)


def run_and_judge(request: CheckRequest, mode: RunMode) -> Judged:
    """Run the request's check ranks through `mode` and judge them against their baseline (exit 2 before
    anything runs when there is none). Without `need_baseline` (a refresh) nothing is judged: a run that did not
    fail comes back with report code 0 and its reports, for the caller to store."""
    found = None
    if request.need_baseline:
        try:
            found = find_baseline(request)
        except (NoBaseline, bl.BaselineError) as exc:
            text = str(exc) if isinstance(exc, NoBaseline) else f"baseline file error: {exc}"
            return Judged(report=Report(exit_code=Cli.USAGE, text=text, data={"verdict": "input error"}), run=None)
    try:
        run = run_ranks(request, mode)
    except RankReportError as exc:  # parent and ranks disagree on the report: ours to fix, never a verdict
        return Judged(
            report=Report(
                exit_code=Cli.ENGINE,
                text=f"engine failure: unreadable rank report: {exc}",
                data={"verdict": "engine failure"},
            ),
            run=None,
        )
    if run.reports is None:
        return Judged(report=_on_disk(failure_report(run), request), run=run)
    if found is None:
        return Judged(report=Report(exit_code=Cli.OK, text="", data={}), run=run)
    judgement = judge(run.reports, found, request)
    report = report_of(judgement, judging=request.judging, log_dir=run.log_dir)
    return Judged(report=_on_disk(report, request), run=run)


def _on_disk(report: Report, request: CheckRequest) -> Report:
    """The report with what the run left beside its logs, for the page's links: the depyf dumps and the
    structured trace (tlparse's input), where the run wrote them."""
    trace = knobs.read("TORCH_TRACE") or (str(request.dump_dir / "torch_trace") if request.dump_dir else None)
    where = {"scenario": request.job.name, "dump_dir": str(request.dump_dir) if request.dump_dir else None}
    return dataclasses.replace(report, data={**report.data, **where, "torch_trace": trace})
