"""The judge: a check run's typed reports against its baseline, as judged rows. A pure function of typed values
(no file, no process, no printing): `judge(reports, found, request)` -> `Judgement`; the text, the JSON and
the page are rendered from that (compile_guard.flow.report).

"Judge" means this one step in compile_guard: the ranks *compare* their statements (compile_guard.agreement.compare),
the quality *rules* decide a rank's figure (compile_guard.quality.rules), the matrix reads a row's *outcome*.
"""

from __future__ import annotations

from dataclasses import dataclass

from compile_guard.contracts.rank_job import RankJob
from compile_guard.contracts.rank_report import RankReport, mesh
from compile_guard.flow.request import CheckRequest, Found
from compile_guard.health import baseline as bl
from compile_guard.health import policy
from compile_guard.health.schema import baseline_view
from compile_guard.quality import rows as quality_rows


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """Everything the judge decided about one run, as data: each renderer reads this and nothing else."""

    job: RankJob  # what ran
    reports: list[RankReport]  # every rank's report (the driver's too), typed
    found: Found  # the baseline, where it was found, and whether it is this very torch's
    factors: bl.Factors  # what the run reported it is (its torch, device, backends)
    ranks: list[str]  # the mesh's ranks, as the tables name them ("rank0", ...)
    health: list[policy.Row]  # compile-health rows (and "nothing compiled" when compile did not happen)
    quality: list[policy.Row]  # quality rows, per rank (compile_guard.quality.rows)
    quality_lines: list[str]  # each quality judgement explained, a line each
    timings: dict  # per rank: what each timing test found (ratio, p, mde, judged, why not)
    renames: list[str]  # break reasons another torch only renamed (a baseline of another release)
    passed: bool  # the verdict under the request's flags
    problems: list[str]  # why not, a line per failing row
    failing: list[str]  # the failing rows' metrics
    refresh: str  # the command that stores this run's baseline
    allow_improvement: bool  # fewer breaks/graphs than the baseline passes

    @property
    def rows(self) -> list[policy.Row]:
        return self.health + self.quality


def judge(reports: list[RankReport], found: Found, request: CheckRequest) -> Judgement:
    """The request's run, as its ranks reported it: its compile health (the policy, health.policy) and quality (per
    rank, quality.rules via quality.rows) against the baseline found for it, decided under the request's flags."""
    job, base, ranks = request.job, found.baseline, mesh(reports)
    factors = bl.Factors.observed(job, reports)
    quality, lines, timings = quality_rows.rows(
        base.quality, [(f"rank{r.rank}", r.quality) for r in ranks], request.judging
    )
    gate = policy.gate(
        base.metrics,
        base.break_sites,
        [baseline_view(r.health) for r in ranks],
        [r.health.break_sites for r in ranks],
        others=quality,
        other_release=base.factors.torch != factors.torch,
        compile_on=job.spec.compile != "off",
        allow_improvement=request.allow_improvement,
        strict=request.strict,
    )
    return Judgement(
        job=job,
        reports=reports,
        found=found,
        factors=factors,
        ranks=[f"rank{r.rank}" for r in ranks],
        health=gate.health,
        quality=quality,
        quality_lines=lines,
        timings=timings,
        renames=gate.renames,
        passed=gate.passed,
        problems=gate.problems,
        failing=gate.failing,
        refresh=found.refresh,
        allow_improvement=request.allow_improvement,
    )
