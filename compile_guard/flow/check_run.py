"""A check's run: its ranks run through the command's run mode, their reports read back validated (`CheckRun`).

`run_ranks(request, mode)` is the flow's run step (compile_guard.flow.check_flow): the request's rank program
(compile_guard.ranks.check, passed by the command that chose it) run by the mode (launched children, or this
process in place); neither the flow nor the launch layer imports it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compile_guard.contracts.rank_job import RankJob
from compile_guard.contracts.rank_report import FILE, RankReport
from compile_guard.flow.request import CheckRequest
from compile_guard.launch.launcher import LaunchResult
from compile_guard.launch.modes import RankProgram, RunMode
from compile_guard.quality.options import STEADY_ALLOCATOR_ENV
from engine import events, knobs


@dataclass(frozen=True, kw_only=True)
class CheckRun:
    job: RankJob  # what the ranks ran
    result: LaunchResult | None  # None when the ranks ran in place under another launcher
    reports: list[RankReport] | None  # per rank, validated; None when the run failed (a rank wrote none)
    log_dir: Path | None  # the ranks' logs (None in place: the launcher has them)
    code: int = 0  # in place: this rank's CLI exit code, settled with its peers (compile_guard.launch.in_place)


def _progress_line(event: dict[str, Any]) -> str:
    if event["event"] == "parity_ok":
        return f"  handshake {event['handshake']}: {event['keys']} keys equal on ranks {event['ranks']}"
    if event.get("phase") == "warmup_done":
        return (
            f"  warmup done: unique_graphs={event['unique_graphs']} graph_breaks={event['graph_breaks']}"
            f" recompiles={event['recompiles']}"
        )
    return f"  steady chunk {event['chunk_index']} done ({event['generator_calls']} generator calls)"


def run_ranks(request: CheckRequest, mode: RunMode) -> CheckRun:
    """The check's ranks for the request's job, run by `mode`; a failed run comes back without reports.
    RankReportError (exit 3) on a report this version cannot read."""
    job, spec, dump_dir = request.job, request.job.spec, request.dump_dir
    env = dict(request.env)
    if dump_dir is not None and knobs.read("TORCH_TRACE") is None:
        env["TORCH_TRACE"] = str(dump_dir / "torch_trace")  # every rank's structured log, ready for tlparse
    program = RankProgram(
        module=request.program,
        report=FILE,
        nprocs=spec.nprocs,
        deadline_s=job.deadline_s,
        argv=("--job", job.to_json(), *(["--dump-dir", str(dump_dir)] if dump_dir and job.target is None else [])),
        env={**allocator_env(job), **spec.env, **env},
        rank_env=request.rank_env,
        followed_rank=1 if spec.topology == "pp1" else 0,  # pp1: the mesh leader compiles
        title=f"check {spec.name}" if request.progress else "",
    )
    log_dir = request.log_dir
    if log_dir is None and mode.launches:  # in place, each rank logs where its launcher put it
        log_dir = Path(tempfile.mkdtemp(prefix="compile_guard_check_"))

    def follow(line: str) -> None:
        for event in events.parse(line):
            if request.progress and event["event"] in ("parity_ok", "progress"):
                mode.out.print(_progress_line(event))

    ran = mode.run(program, log_dir=log_dir, on_line=follow)
    reports = None
    if ran.reports is not None:
        reports = [
            RankReport.from_json(
                text, what=f"rank {r}'s report" + (f" ({ran.log_dir / FILE.format(rank=r)})" if ran.log_dir else "")
            )
            for r, text in enumerate(ran.reports)
        ]
    return CheckRun(job=job, result=ran.result, reports=reports, log_dir=ran.log_dir, code=ran.code)


def allocator_env(job: RankJob) -> dict[str, str]:
    """glibc malloc's thresholds fixed for ranks that time eager steps (STEADY_ALLOCATOR_ENV says why);
    nothing when the run measures no speed. A run's own env (spec, caller) overrides them."""
    return dict(STEADY_ALLOCATOR_ENV) if job.measure.speed else {}
