"""What a check row is judged against when no committed number may judge it: a healthy baseline written in the
same matrix run on the same machine, and the proof that a row's fault reached the generated code.

The NU rows judge timings (speed, compile time), and a timing is comparable with a baseline from the same
kind of machine only (compile_guard.quality.machine): a committed baseline holds the timings of the machine
that wrote it. So the first NU row of a run writes the healthy quality example's baseline with the rows' own
spec (the same check, no fault) into a directory of the run's own, and every NU row is judged against it; its
ranks' `graph_compiled` events say what healthy generated code holds, which NU-02's proof compares with. It
pools RUNS healthy runs, so the rows are judged with the noise measured on this machine, not assumed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from compile_guard.contracts.rank_job import RankJob
from compile_guard.flow.check_flow import run_and_judge
from compile_guard.flow.request import CheckRequest
from compile_guard.health import baseline as bl
from compile_guard.launch.modes import Launched
from compile_guard.matrix.rows import Row
from engine import events

Events = list[list[dict[str, Any]]]  # per rank, its log's events


@dataclasses.dataclass(frozen=True, kw_only=True)
class Healthy:
    baselines: Path  # the directory holding the healthy baseline
    events: Events  # its ranks' events


RUNS = 3  # healthy runs pooled into the baseline: its machine's noise measured (quality.rules.MIN_RUNS), not assumed


class HealthyBaselines:
    """Healthy baselines written on demand, once per spec, under `root` (a matrix run's log directory)."""

    def __init__(self, root: Path, program: ModuleType) -> None:
        self.root, self.program = root, program  # program: the check's rank program (compile_guard.ranks.check)
        self._made: dict[str, Healthy] = {}

    def of(self, job: RankJob) -> Healthy:
        """The healthy baseline of `job` (RUNS check runs without any fault, pooled as `baseline refresh --runs`
        pools them), written the first time it is asked."""
        key = job.to_json()
        if key not in self._made:
            where = self.root / f"healthy-{len(self._made)}"
            runs = []
            for i in range(RUNS):
                request = CheckRequest(
                    job=job, program=self.program, baselines=where, need_baseline=False, log_dir=where / f"logs{i}"
                )
                judged = run_and_judge(request, Launched())
                run = judged.run
                if run is None or run.reports is None or run.result is None:
                    raise RuntimeError(f"the healthy run the NU rows are judged against failed: {judged.report.text}")
                runs.append(run)
            first = bl.Baseline.of(job, runs[0].reports)
            moved = sorted({k for r in runs[1:] for k in bl.Baseline.of(job, r.reports).moved_from(first)})
            if moved:
                raise RuntimeError(f"the healthy runs the NU rows are judged against compiled differently: {moved}")
            pooled = bl.Baseline.pooled(job, [r.reports for r in runs if r.reports is not None])
            bl.write(where / bl.file_name(pooled.factors), pooled)
            ranks = [events.parse(r.log_path.read_text(errors="replace")) for r in runs[0].result.ranks]
            self._made[key] = Healthy(baselines=where, events=ranks)
        return self._made[key]


def _code(rank_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each graph's generated code holds on one rank, from its graph_compiled events."""
    return [e["code"] for e in rank_events if e["event"] == "graph_compiled" and e.get("code")]


def _erf(ranks: Events, healthy: Healthy | None) -> str | None:
    called = [sum(c["math"].get("erf", 0) for c in _code(evs)) for evs in ranks]
    if all(n > 0 for n in called):
        return None
    return f"no erf call in the generated code of every rank (erf calls per rank: {called})"


def _unfused(ranks: Events, healthy: Healthy | None) -> str | None:
    loops = [sum(c["loops"] + c["kernels"] for c in _code(evs)) for evs in ranks]
    base = [sum(c["loops"] + c["kernels"] for c in _code(evs)) for evs in (healthy.events if healthy else [])]
    if base and all(n > max(base) for n in loops):
        return None
    return f"no more kernels and loops than healthy code on every rank ({loops} against healthy {base})"


def _slow_pass(ranks: Events, healthy: Healthy | None) -> str | None:
    ran = [sum(e["event"] == "slow_pass" for e in evs) for evs in ranks]
    compiled = [len(_code(evs)) for evs in ranks]
    if all(n > 0 and n >= c for n, c in zip(ran, compiled, strict=True)):
        return None
    return f"the slower pass did not run in every graph's compile (runs per rank {ran}, graphs {compiled})"


def _rank1_math(ranks: Events, healthy: Healthy | None) -> str | None:
    math = [[c["math"] for c in _code(evs)] for evs in ranks]
    if len(math) > 1 and math[1] and math[0] and math[1] != math[0]:
        return None
    return f"rank 1's generated code calls the same math as rank 0's ({math})"


# a row's Expect.applied -> its proof: None when the fault reached the generated code, else what was seen instead
APPLIED: dict[str, Callable[[Events, Healthy | None], str | None]] = {
    "erf": _erf,
    "unfused": _unfused,
    "slow_pass": _slow_pass,
    "rank1_math": _rank1_math,
}


def not_applied(row: Row, ranks: Events, healthy: Healthy | None) -> str | None:
    """'fault not applied: ...' when the row's proof fails; None when it holds or the row names none."""
    if not row.expect.applied:
        return None
    seen = APPLIED[row.expect.applied](ranks, healthy)
    return None if seen is None else f"fault not applied: {seen}"
