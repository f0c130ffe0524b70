"""The check flow, once: find the baseline → run the ranks (in place, or self-launched) → judge.

`run_and_judge` is what `check`, `baseline refresh`, the matrix's check rows and the pytest
plugin all call; each does only its own part after it (print and write files; write the new
baseline; compare the verdict with the row's; fail the test). The refresh hint a failed or
regressed run prints is built here, once (`check_run.refresh_command`: right for --target too).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compile_guard.flow.check_run import CheckRun, NoBaseline, baseline_for, refresh_command, run_check
from compile_guard.flow.report import Report, failure_report, judge
from compile_guard.health import baseline as bl
from compile_guard.launch import in_place
from compile_guard.quality.options import Judging
from compile_guard.contracts.rank_report import RankReportError
from compile_guard.verdict import Cli
from engine.runspec import RunSpec


@dataclass(frozen=True, kw_only=True)
class Judged:
    report: Report  # exit code, text, data for --json
    run: CheckRun | None  # None when nothing ran (no usable baseline)


def _print_progress(event: dict[str, Any]) -> None:
    if event["event"] == "parity_ok":
        print(f"  handshake {event['handshake']}: {event['keys']} keys equal on ranks {event['ranks']}", flush=True)
    elif event.get("phase") == "warmup_done":
        print(f"  warmup done: unique_graphs={event['unique_graphs']} graph_breaks={event['graph_breaks']}"
              f" recompiles={event['recompiles']}", flush=True)  # fmt: skip
    else:
        print(f"  steady chunk {event['chunk_index']} done ({event['generator_calls']} generator calls)", flush=True)


def run_ranks(spec: RunSpec, *, log_dir: Path | None = None, dump_dir: Path | None = None, verbose: bool = False,
              env: dict[str, str] | None = None, rank_env: dict[int, dict[str, str]] | None = None,
              launch: bool = False) -> CheckRun:  # fmt: skip
    """The check's ranks for `spec`: in place when a launcher already made this process one of them (unless
    `launch`: the matrix and the plugin always supervise ranks of their own), else self-launched (a failed
    run comes back without reports)."""
    if in_place.active() and not launch:
        reports, code = in_place.probe_all(spec, dump_dir=dump_dir)
        return CheckRun(spec=spec, result=None, reports=reports, log_dir=None, code=code)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="compile_guard_check_"))
    if verbose:
        print(f"check {spec.name}: launching {spec.nprocs} ranks (logs: {log_dir})", flush=True)
    started = time.monotonic()
    run = run_check(spec, log_dir=log_dir, dump_dir=dump_dir, env=env, rank_env=rank_env,
                    on_progress=_print_progress if verbose else None)  # fmt: skip
    if verbose:
        print(f"  ranks done in {time.monotonic() - started:.1f}s", flush=True)
    return run


def _failed(run: CheckRun) -> Report:
    if run.result is None:  # in place: this rank's code, settled with its peers; the ranks' logs say why
        return Report(exit_code=run.code, text=f"check {run.spec.name}: failed, exit {run.code}, the same on every"
                      " rank (settled with the peers); each rank's log above says why",
                      data={"verdict": "failed in place", "exit_code": run.code})  # fmt: skip
    return failure_report(run)


def run_and_judge(spec: RunSpec, baselines: Path, *, need_baseline: bool = True, allow_improvement: bool = False,
                  strict: bool = False, log_dir: Path | None = None, dump_dir: Path | None = None,
                  verbose: bool = False, env: dict[str, str] | None = None,
                  rank_env: dict[int, dict[str, str]] | None = None, launch: bool = False,
                  judging: Judging = Judging()) -> Judged:  # fmt: skip
    """Run `spec`'s check ranks and judge them against their baseline in `baselines` (exit 2 before anything
    runs when there is none). Without `need_baseline` (a refresh) nothing is judged: a run that did not fail
    comes back with report code 0 and its reports, for the caller to store."""
    refresh = refresh_command(spec, baselines)
    found = None
    if need_baseline:
        try:
            found = baseline_for(spec, baselines)
        except (NoBaseline, bl.BaselineError) as exc:
            text = str(exc) if isinstance(exc, NoBaseline) else f"baseline file error: {exc}"
            return Judged(report=Report(exit_code=Cli.USAGE, text=text, data={"verdict": "input error"}), run=None)
    try:
        run = run_ranks(spec, log_dir=log_dir, dump_dir=dump_dir, verbose=verbose, env=env, rank_env=rank_env,
                        launch=launch)  # fmt: skip
    except RankReportError as exc:  # parent and ranks disagree on the report: ours to fix, never a verdict
        return Judged(report=Report(exit_code=Cli.ENGINE, text=f"engine failure: unreadable rank report: {exc}",
                                    data={"verdict": "engine failure"}), run=None)  # fmt: skip
    if run.reports is None:
        return Judged(report=_failed(run), run=run)
    if found is None:
        return Judged(report=Report(exit_code=Cli.OK, text="", data={}), run=run)
    path, exact, base = found
    report = judge(run, base, path, exact, refresh=refresh, allow_improvement=allow_improvement, strict=strict,
                   judging=judging)  # fmt: skip
    return Judged(report=report, run=run)
