"""The parent side of a check run: launch the check ranks for a run spec, read their reports.

`run_check` launches them (compile_guard.flow.check_flow runs it, or the in-place body, for every
caller); compile_guard.flow.report turns a run and a baseline into rows, text and an exit code.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compile_guard.health import baseline as bl
from compile_guard.health.schema import baseline_view
from compile_guard.quality.judge import baseline_entry
from compile_guard.quality.options import STEADY_ALLOCATOR_ENV, Measure
from compile_guard.launch.launcher import LaunchResult, LaunchSpec, launch, python_module_argv
from compile_guard.contracts.rank_report import RankReport
from engine import events, knobs
from engine.runspec import RunSpec

RANK_PROGRAM = "compile_guard.ranks.check"


@dataclass(frozen=True, kw_only=True)
class CheckRun:
    spec: RunSpec
    result: LaunchResult | None  # None when the ranks ran in place under another launcher
    reports: list[RankReport] | None  # per rank, validated; None when the run failed (a rank wrote none)
    log_dir: Path | None  # the ranks' logs (None in place: the launcher has them)
    code: int = 0  # in place: this rank's CLI exit code, settled with its peers (compile_guard.launch.in_place)

    def mesh(self) -> list[RankReport]:
        """The symmetric group's reports (pp1: rank0, the driver, compiles nothing)."""
        assert self.reports is not None, "a failed run has no reports"
        return [r for r in self.reports if r.is_mesh]

    def factors(self) -> dict[str, Any]:
        eff = self.mesh()[0].effective_backend
        return {
            "scenario": self.spec.name,
            "torch": eff["torch"],
            "device_type": eff["device_type"],
            "compile_backend": eff["compile_backend"],
            "dist_backend": eff["dist_backend"],
            "world_size": self.spec.nprocs,
            "config_hash": self.spec.config_hash(),
        }

    def metrics(self) -> list[dict[str, Any]]:
        return [baseline_view(r.final) for r in self.mesh()]

    def to_baseline(self) -> bl.Baseline:
        # Ranks were proven symmetric after warmup; rank 0 speaks for the group.
        quality = {f"rank{r.rank}": baseline_entry(r.quality) for r in self.mesh() if r.quality}
        return bl.Baseline(factors=self.factors(), metrics=self.metrics()[0],
                           break_sites=self.mesh()[0].final["break_sites"], quality=quality)  # fmt: skip


def run_check(
    spec: RunSpec,
    *,
    log_dir: Path,
    env: dict[str, str] | None = None,
    rank_env: dict[int, dict[str, str]] | None = None,
    dump_dir: Path | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> CheckRun:
    argv = python_module_argv(RANK_PROGRAM, "--spec", spec.to_json(), "--out", str(log_dir),
                              *(["--dump-dir", str(dump_dir)] if dump_dir and spec.target is None else []))  # fmt: skip
    env = dict(env or {})
    if dump_dir is not None and knobs.read("TORCH_TRACE") is None:
        env["TORCH_TRACE"] = str(dump_dir / "torch_trace")  # every rank's structured log, ready for tlparse

    def follow(line: str) -> None:
        for event in events.parse(line):
            if on_progress is not None and event["event"] in ("parity_ok", "progress"):
                on_progress(event)

    result = launch(
        LaunchSpec(
            argv=argv, nprocs=spec.nprocs, deadline_s=spec.deadline_s, log_dir=log_dir,
            env={**allocator_env(spec), **spec.env, **env}, rank_env=rank_env or {}, on_line=follow,
            followed_rank=1 if spec.topology == "pp1" else 0,  # pp1: the mesh leader compiles
        )
    )  # fmt: skip
    paths = [log_dir / f"probe-rank{r}.json" for r in range(spec.nprocs)]
    reports = None
    if result.ok and all(p.exists() for p in paths):  # RankReportError (exit 3) on a report this version cannot read
        reports = [RankReport.from_json(p.read_text(), what=f"rank {r}'s report ({p})") for r, p in enumerate(paths)]
    return CheckRun(spec=spec, result=result, reports=reports, log_dir=log_dir)


def allocator_env(spec: RunSpec) -> dict[str, str]:
    """glibc malloc's thresholds fixed for ranks that time eager steps (STEADY_ALLOCATOR_ENV says why);
    nothing when the run measures no speed. A run's own env (spec, caller) overrides them."""
    return dict(STEADY_ALLOCATOR_ENV) if Measure.from_dict(spec.quality).speed else {}


class NoBaseline(Exception):
    """No baseline for a spec in a directory: the message names the file looked for and the refresh command."""


def refresh_command(spec: RunSpec, baselines: Path) -> str:
    if spec.target is None:
        return f"python -m compile_guard baseline refresh --scenario {spec.name}"
    return (f"python -m compile_guard baseline refresh --target {spec.target} --nproc {spec.nprocs}"
            f" --backend {spec.compile} --baselines {baselines}")  # fmt: skip


def baseline_for(spec: RunSpec, directory: Path) -> tuple[Path, bool, bl.Baseline]:
    """(path, exact torch version, baseline) that a run of `spec` is judged against. NoBaseline when there
    is none; BaselineError when it cannot be used — unreadable, or recorded for another configuration."""
    found = bl.find(directory, expected_factors(spec))
    if found is None:
        raise NoBaseline(f"no baseline for scenario {spec.name} in {directory} (looked for"
                         f" {bl.file_name(expected_factors(spec))}); create it with"
                         f" `{refresh_command(spec, directory)}`")  # fmt: skip
    path, exact = found
    base = bl.load(path)
    if base.factors["config_hash"] != spec.config_hash():
        raise bl.BaselineError(path, f"is for another configuration (config hash {base.factors['config_hash']},"
                                     f" this run {spec.config_hash()}): compare like with like — refresh it with"
                                     f" `{refresh_command(spec, directory)}`")  # fmt: skip
    return path, exact, base


def installed_torch() -> str:
    """torch.__version__ as a run will report it (with its local part, 2.14.1+cu130), without importing
    torch: read as text from torch/version.py, which the wheel writes; the package metadata drops the
    local part on some builds."""
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.origin is not None:
        version_file = Path(spec.origin).parent / "version.py"
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.M) \
            if version_file.is_file() else None
        if found:
            return found.group(1)
    return importlib.metadata.version("torch")


def expected_factors(spec: RunSpec, *, device_type: str | None = None) -> dict[str, Any]:
    """The factors a run of `spec` will report, known before launching (to find its baseline)."""
    if device_type is None:
        device_type = spec.device if spec.device != "auto" else spec.dist_config().resolved_device_type()  # torch
    dist_backend = spec.dist_backend if spec.dist_backend != "auto" else "nccl" if device_type == "cuda" else "gloo"
    return {
        "scenario": spec.name,
        "torch": installed_torch(),
        "device_type": device_type,
        "compile_backend": spec.compile,
        "dist_backend": dist_backend,
        "world_size": spec.nprocs,
        "config_hash": spec.config_hash(),
    }
