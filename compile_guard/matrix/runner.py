"""The operator-matrix runner: each row through the launcher, judged from exits and events.

For each row: launch the row's engine topology (the `serve` program, compile_guard.ranks.serve, with the
fault injector as the engine's hooks) or the check's ranks (the `check` program), with a deadline, then check
  - every rank's exit code (or signal) is one the row allows;
  - the detecting rank logged the row's event with the expected fields (which mechanism
    caught it, where: preflight / init / pre-generator / watchdog);
  - for rows where the job must go on: every other chunk completed;
  - no process is left.
Time-to-fail runs from the injection (the `inject` event; for per-rank config rows,
the moment the last rank joined) to the detection (job-continues rows) or to the last
exit of a rank that was not killed by the launcher (exit rows). It is a figure, reported
against the row's budget, and never part of pass/fail here or in tests.

The rank programs are passed in (`Programs`) by the command that runs the matrix: this layer imports none.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from compile_guard import named
from compile_guard.contracts.rank_job import RankJob
from compile_guard.contracts.rank_report import mesh
from compile_guard.flow.check_flow import Judged, run_and_judge
from compile_guard.flow.request import CheckRequest
from compile_guard.flow.scenarios import SCENARIOS, target_scenario
from compile_guard.health import baseline as bl
from compile_guard.launch.launcher import LaunchResult, LaunchSpec, launch, python_module_argv
from compile_guard.launch.leftovers import leftover_pids
from compile_guard.launch.modes import Launched
from compile_guard.launch.supervision import Interrupted
from compile_guard.matrix.rows import ALL_EXIT, CHECK, CHUNKS, CONTINUES, FAULT_CHUNK, THIS_RUN, Row
from compile_guard.matrix.this_run import Healthy, HealthyBaselines, not_applied
from compile_guard.page.pages import CHECK_REPORT
from compile_guard.quality.options import REPORT, Judging
from compile_guard.verdict import Cli
from engine import events
from engine.atomic_json import write_json
from engine.runspec import RunSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Programs:
    """The rank programs a matrix runs, as modules, chosen by its command (compile_guard.commands.matrix)."""

    check: ModuleType  # CHECK rows: the check's rank program (compile_guard.ranks.check)
    serve: ModuleType  # engine-topology rows: a topology served with the fault injector (compile_guard.ranks.serve)


@dataclass(frozen=True, kw_only=True)
class RowResult:
    id: str
    passed: bool
    problems: list[str]  # why it failed; empty when passed
    observed: str  # "rank0 rc=14, rank1 rc=14" etc.
    signature: str  # the detecting rank's event, as logged
    ttf_s: float | None  # time-to-fail; None when it could not be measured
    detect_s: float | None  # injection -> the detecting event (the rest of ttf is exiting)
    ttf_budget_s: float | None
    leftover_pids: list[int]
    wall_s: float
    log_dir: str
    not_run: str | None = None  # why the row did not run on this torch (its `requires`); None when it ran

    @property
    def over_budget(self) -> bool:
        if self.ttf_budget_s is None:
            return False  # nothing fails in this row: no time to measure
        return self.ttf_s is None or self.ttf_s > self.ttf_budget_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "over_budget": self.over_budget}


def _exit_label(rank: Any) -> int | str:
    return rank.signal if rank.signal else rank.returncode


def _match(event: dict[str, Any], fields: dict[str, Any]) -> bool:
    return all(event.get(k) == v for k, v in fields.items())


def row_outcome(
    row: Row, result: LaunchResult, rank_events: list[list[dict[str, Any]]], extra_problems: tuple[str, ...] = ()
) -> RowResult:
    problems: list[str] = list(extra_problems)
    exp = row.expect
    for r in result.ranks:
        allowed = exp.exit_codes.get(r.rank, (0,)) if exp.kind == ALL_EXIT else (0,)
        if _exit_label(r) not in allowed:
            want = [int(c) if isinstance(c, int) else c for c in allowed]  # RankCode members print as numbers
            problems.append(f"rank {r.rank} exited {_exit_label(r)}, expected one of {want}")
    if result.outcome == "deadline":
        problems.append(f"deadline of {row.deadline_s}s reached: a hang, not a fast failure")
    found = [e for e in rank_events[exp.detector] if e["event"] == exp.event and _match(e, exp.fields)]
    if not found:
        seen = sorted({e["event"] for e in rank_events[exp.detector]})
        problems.append(f"rank {exp.detector} logged no {exp.event} event matching {exp.fields}; it logged {seen}")
    if exp.kind == CONTINUES:
        done = next((e for e in rank_events[0] if e["event"] == "run_done"), None)
        want = [k for k in range(CHUNKS) if k != FAULT_CHUNK]
        if done is None or done.get("chunks_done") != want:
            problems.append(
                f"job did not go on: chunks_done={None if done is None else done.get('chunks_done')}, expected {want}"
            )
    left = leftover_pids(result)
    if left:
        problems.append(f"processes left behind: {left}")

    injected = [e["t"] for evs in rank_events for e in evs if e["event"] == "inject"]
    joined = [e["t"] for evs in rank_events for e in evs if e["event"] == "joined"]
    t_inject = min(injected) if injected else (max(joined) if joined else None)
    if exp.since is not None:  # the clock starts at the last `since` event before the detection
        limit = found[0]["t"] if found else float("inf")
        starts = [e["t"] for evs in rank_events for e in evs if e["event"] == exp.since and e["t"] <= limit]
        t_inject = max(starts) if starts else None
    if exp.ttf_budget_s is None:
        t_end = None
    elif exp.kind == CONTINUES:
        t_end = found[0]["t"] if found else None
    else:
        own = [result.started_at + r.duration_s for r in result.ranks if not r.killed_by_launcher]
        t_end = max(own) if own else None
    ttf = None if t_inject is None or t_end is None else round(t_end - t_inject, 4)
    measurable = exp.ttf_budget_s is not None and t_inject is not None and found
    detect = round(found[0]["t"] - t_inject, 4) if measurable else None
    return RowResult(
        id=row.id,
        passed=not problems,
        problems=problems,
        observed=", ".join(f"rank{r.rank} {_exit_label(r)}" for r in result.ranks),
        signature=_signature(found[0], exp.fields) if found else "",
        ttf_s=ttf,
        detect_s=detect,
        ttf_budget_s=exp.ttf_budget_s,
        leftover_pids=left,
        wall_s=round(result.duration_s, 2),
        log_dir=str(result.ranks[0].log_path.parent),
    )


def _signature(event: dict[str, Any], first: dict[str, Any]) -> str:
    """The event as one line, the row's expected fields first."""
    keys = [k for k in first if k in event] + sorted(k for k in event if k not in first and k not in ("t", "event"))
    return f"{event['event']}: " + " ".join(f"{k}={event[k]}" for k in keys)


def baseline_problems(row: Row, judged: Judged) -> list[str]:
    """A check row's verdict (the check's own, through the one flow) against the row's expectation."""
    exp = row.expect
    if exp.baseline is None:
        return []
    run = judged.run
    if run is None:
        return [f"the committed baseline cannot judge this row: {judged.report.text}"]
    if run.reports is None:
        return [f"the check's ranks wrote no reports: {judged.report.text.splitlines()[0]}"]
    problems = []
    want = Cli.OK if exp.baseline == "pass" else Cli.FAIL
    if judged.report.exit_code != want:
        problems.append(
            f"baseline verdict exit {judged.report.exit_code}, expected {want} ({exp.baseline}):\n{judged.report.text}"
        )
    regressed = {r["metric"] for r in judged.report.data.get("rows", []) if r["verdict"] == "regression"}
    if exp.quality and regressed != set(exp.quality):
        problems.append(
            f"quality rows that regressed: {sorted(regressed)}, expected exactly {list(exp.quality)}:\n"
            f"{judged.report.text}"
        )
    sites = [s["site"] for s in mesh(run.reports or [])[0].health.break_sites]
    for expected in exp.sites:
        if not any(expected in site for site in sites) or expected not in judged.report.text:
            problems.append(f"report names no break site in {expected}; sites: {sites}")
    return problems


def row_spec(row: Row) -> RunSpec:
    """The run spec of an engine row: 2 layers (the rows test the control plane, not the model's depth)."""
    return RunSpec(
        name=row.id,
        topology=row.program,
        nprocs=row.nprocs,
        compile="off",
        layers=2,
        chunks=CHUNKS,
        **row.spec,
    )


def check_job(row: Row) -> RankJob:
    """The job of a check row: its scenario, or its target on 2 ranks with aot_eager; then the row's fields (by
    their flat names: RankJob.replace)."""
    base = (
        RankJob(spec=SCENARIOS[row.scenario])
        if row.target is None
        else target_scenario(row.target, nprocs=row.nprocs, backend="aot_eager")
    )
    return base.replace(**row.spec)


def missing_requirement(row: Row) -> str | None:
    """The first torch API the row needs that the installed torch lacks, said as the row's result; else None."""
    import torch

    for path in row.requires:
        try:
            named.dotted(path)
        except (ImportError, AttributeError):
            return f"not run: torch {torch.__version__} has no {path}"
    return None


def run_row(row: Row, log_root: Path, programs: Programs, healthy: HealthyBaselines | None = None) -> RowResult:
    """One row: launched, judged. `healthy`: the matrix run's healthy baselines (THIS_RUN rows), made here when
    not given."""
    log_dir = log_root / row.id
    unavailable = missing_requirement(row)
    if unavailable is not None:
        return RowResult(
            id=row.id,
            passed=True,
            problems=[],
            observed=unavailable,
            signature="",
            ttf_s=None,
            detect_s=None,
            ttf_budget_s=None,
            leftover_pids=[],
            wall_s=0.0,
            log_dir=str(log_dir),
            not_run=unavailable,
        )
    t0 = time.monotonic()
    extra: list[str] = []
    made: Healthy | None = None
    if row.program == CHECK:
        if row.against == THIS_RUN:
            made = (healthy or HealthyBaselines(log_root / "healthy", programs.check)).of(check_job(row))
        request = CheckRequest(
            job=check_job(row),
            program=programs.check,
            baselines=made.baselines if made else bl.DEFAULT_DIR,
            log_dir=log_dir,
            env=row.env,
            rank_env=row.rank_env,
            need_baseline=row.expect.baseline is not None,
            # a committed baseline's timings are the machine's that wrote it: reported, never judged here
            judging=Judging() if made else Judging(timings=REPORT),
        )
        judged = run_and_judge(request, Launched())  # a row's faults kill ranks: always ranks of its own
        if judged.run is None:  # no committed baseline for the row's scenario: nothing ran
            raise RuntimeError(f"{row.id}: {judged.report.text}")
        said = {"exit_code": judged.report.exit_code, "text": judged.report.text, "data": judged.report.data}
        write_json(log_dir / CHECK_REPORT, said)  # the row's check, for the matrix's page (compile_guard.page)
        result = judged.run.result
        extra = baseline_problems(row, judged)
    else:
        spec = row_spec(row)
        result = launch(
            LaunchSpec(
                argv=python_module_argv(programs.serve, "--spec", spec.to_json(), "--out", str(log_dir)),
                nprocs=row.nprocs,
                deadline_s=row.deadline_s,
                log_dir=log_dir,
                env=row.env,
                rank_env=row.rank_env,
            )
        )
    if result.outcome == "interrupted":
        raise Interrupted(result.interrupted_by)  # the row's ranks are killed; the matrix stops here
    rank_events = [events.parse(r.log_path.read_text(errors="replace")) for r in result.ranks]
    verdict = row_outcome(row, result, rank_events, tuple(extra))
    unapplied = not_applied(row, rank_events, made)
    if unapplied is not None:  # the fault never reached the code: no other verdict of the row means anything
        verdict = dataclasses.replace(verdict, passed=False, problems=[unapplied])
    log.info("%s %s in %.1fs", row.id, "pass" if verdict.passed else "FAIL", time.monotonic() - t0)
    return verdict
