"""One check, asked for once: a frozen `CheckRequest` (what runs, where its baseline is, how it is judged,
where the output goes) and its first step, the baseline it is judged against (`find_baseline`).

Every caller builds one: `check` and `baseline refresh` from their flags, the matrix's check rows, the
pytest plugin, the GPU smoke script; compile_guard.flow.check_flow.run_and_judge takes it to one report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from compile_guard.contracts.rank_job import RankJob
from compile_guard.health import baseline as bl
from compile_guard.quality.options import Judging


@dataclass(frozen=True, kw_only=True)
class CheckRequest:
    job: RankJob  # what the ranks run, and how (compile_guard.flow.scenarios.resolve and the flags)
    program: ModuleType  # the check's rank program, passed by the command that chose it (compile_guard.ranks.check)
    baselines: Path  # the directory its baseline is found in (and a refresh writes to)
    need_baseline: bool = True  # False: a refresh; nothing judged, the reports come back to be stored
    allow_improvement: bool = False  # fewer breaks/graphs than the baseline passes
    strict: bool = False  # changed fingerprints/backend fail too
    judging: Judging = field(default_factory=Judging)  # the quality rules' factors
    log_dir: Path | None = None  # launched: the ranks' logs (default: a new temp dir)
    dump_dir: Path | None = None  # depyf dumps and TORCH_TRACE per rank
    env: dict[str, str] = field(default_factory=dict)  # launched: every rank's extra environment (a row's fault)
    rank_env: dict[int, dict[str, str]] = field(default_factory=dict)  # launched: one rank's extra environment
    progress: bool = False  # print the ranks' progress as it comes (the CLI)

    def refresh_command(self) -> str:
        """The command that stores this run's baseline: printed when a run regressed or has none."""
        job, spec = self.job, self.job.spec
        if job.target is None:
            return f"python -m compile_guard baseline refresh --scenario {spec.name}"
        return (
            f"python -m compile_guard baseline refresh --target {job.target.factory} --nproc {spec.nprocs}"
            f" --backend {spec.compile} --baselines {self.baselines}"
        )


class NoBaseline(Exception):
    """No baseline for a spec in a directory: the message names the file looked for and the refresh command."""


@dataclass(frozen=True, kw_only=True)
class Found:
    path: Path  # the baseline file
    exact: bool  # recorded on this very torch (else the newest other release's, compared across versions)
    baseline: bl.Baseline
    refresh: str  # the command that stores this run's baseline instead (the report's hint on a change)


def find_baseline(request: CheckRequest) -> Found:
    """The baseline a run of the request's spec is judged against. NoBaseline when there is none; BaselineError
    when it cannot be used — unreadable, or recorded for another configuration."""
    job, directory, refresh = request.job, request.baselines, request.refresh_command()
    found = bl.lookup(directory, job)
    if isinstance(found, str):
        raise NoBaseline(
            f"no baseline for scenario {job.name} in {directory} (looked for {found}); create it with `{refresh}`"
        )
    path, exact, base = found
    if base.factors.config_hash != job.config_hash():
        raise bl.BaselineError(
            path,
            f"is for another configuration (config hash {base.factors.config_hash},"
            f" this run {job.config_hash()}): compare like with like — refresh it with"
            f" `{refresh}`",
        )
    return Found(path=path, exact=exact, baseline=base, refresh=refresh)
