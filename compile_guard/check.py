"""The parent side of `check`: launch the check ranks, read their probes, judge a baseline.

`run_check` is shared by `check`, `baseline refresh` and the matrix's C rows; `report`
turns a run and a baseline into rows, text and an exit code.
"""

from __future__ import annotations

import json
import linecache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tabulate import tabulate

from compile_guard import baseline as bl
from compile_guard import policy
from compile_guard.launcher import LaunchResult, LaunchSpec, launch, python_module_argv
from compile_guard.scenarios import Scenario
from engine import events, knobs
from engine.errors import CompileAsymmetry, ParityMismatch

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ENGINE = 0, 1, 2, 3
REPO = Path(__file__).resolve().parent.parent
ASYMMETRY_CODES = (ParityMismatch.exit_code, CompileAsymmetry.exit_code)


@dataclass(frozen=True, kw_only=True)
class CheckRun:
    scenario: Scenario
    result: LaunchResult
    probes: list[dict[str, Any]] | None  # per rank; None when a rank wrote none
    log_dir: Path

    def mesh_probes(self) -> list[dict[str, Any]]:
        """The symmetric group's probes (pp1: rank0, the driver, compiles nothing)."""
        return [p for p in self.probes if p.get("role") != "driver"]

    def factors(self) -> dict[str, Any]:
        eff = self.mesh_probes()[0]["effective_backend"]
        return {
            "scenario": self.scenario.name,
            "torch": eff["torch"],
            "device_type": eff["device_type"],
            "compile_backend": eff["compile_backend"],
            "dist_backend": eff["dist_backend"],
            "world_size": self.scenario.nprocs,
            "config_hash": self.scenario.config_hash(),
        }

    def metrics(self) -> list[dict[str, Any]]:
        return [
            {**{k: p["final"][k] for k in bl.METRIC_KEYS if k in p["final"]},
             "steady_recompiles": p["steady_recompiles"], "effective_backend": p["effective_backend"]}
            for p in self.mesh_probes()
        ]  # fmt: skip

    def to_baseline(self) -> bl.Baseline:
        # Ranks were proven symmetric after warmup; rank 0 speaks for the group.
        return bl.Baseline(factors=self.factors(), metrics=self.metrics()[0],
                           break_sites=self.mesh_probes()[0]["final"]["break_sites"])  # fmt: skip


def run_check(
    scenario: Scenario,
    *,
    log_dir: Path,
    env: dict[str, str] | None = None,
    rank_env: dict[int, dict[str, str]] | None = None,
    dump_dir: Path | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> CheckRun:
    if scenario.target is not None:  # the user's own model: its own rank program
        argv = python_module_argv("compile_guard.target_rank", "--out", str(log_dir), *scenario.runtime_args())
    else:
        argv = python_module_argv(
            "compile_guard.check_rank", "--scenario", scenario.name, "--out", str(log_dir),
            *scenario.runtime_args(), *(["--dump-dir", str(dump_dir)] if dump_dir else []),
        )  # fmt: skip

    env = dict(env or {})
    if dump_dir is not None and knobs.read("TORCH_TRACE") is None:
        env["TORCH_TRACE"] = str(dump_dir / "torch_trace")  # every rank's structured log, ready for tlparse

    def follow(line: str) -> None:
        for event in events.parse(line):
            if on_progress is not None and event["event"] in ("parity_ok", "progress"):
                on_progress(event)

    result = launch(
        LaunchSpec(
            argv=argv, nprocs=scenario.nprocs, deadline_s=scenario.deadline_s, log_dir=log_dir,
            env={**scenario.env, **env}, rank_env=rank_env or {}, on_line=follow,
            followed_rank=1 if scenario.topology == "pp1" else 0,  # pp1: the mesh leader compiles
        )
    )  # fmt: skip
    paths = [log_dir / f"probe-rank{r}.json" for r in range(scenario.nprocs)]
    probes = [json.loads(p.read_text()) for p in paths] if result.ok and all(p.exists() for p in paths) else None
    return CheckRun(scenario=scenario, result=result, probes=probes, log_dir=log_dir)


@dataclass(frozen=True, kw_only=True)
class Report:
    exit_code: int
    text: str
    data: dict[str, Any] = field(default_factory=dict)  # everything, for --json


def failure_report(run: CheckRun) -> Report:
    """A run that produced no probes: asymmetry (exit 1) or engine failure/deadline (exit 3)."""
    result = run.result
    culprit = result.ranks[result.first_failed if result.first_failed is not None else 0]
    codes = {r.rank: r.returncode for r in result.ranks}
    asym = result.outcome == "rank_failed" and all(c in ASYMMETRY_CODES for c in codes.values())
    if result.outcome == "rank_failed" and all(c == EXIT_USAGE for c in codes.values()):
        # every rank refused its input (a target whose factory raised or returned the wrong thing)
        errors = [line for line in culprit.log_tail.splitlines() if "configuration error" in line]
        text = (errors[-1].split("configuration error: ", 1)[-1] if errors else culprit.log_tail)
        return Report(exit_code=EXIT_USAGE, text=f"input error: {text}",
                      data={"verdict": "input error", "exit_codes": codes, "log_dir": str(run.log_dir)})  # fmt: skip
    kind = "cross-rank asymmetry" if asym else f"engine failure ({result.outcome})"
    text = (
        f"{kind}: {result.summary()}\n--- log tail of rank {culprit.rank} ({culprit.log_path}) ---\n"
        f"{culprit.log_tail}"
    )
    return Report(exit_code=EXIT_FAIL if asym else EXIT_ENGINE, text=text,
                  data={"verdict": kind, "exit_codes": codes, "log_dir": str(run.log_dir)})  # fmt: skip


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


def _cell(value: Any) -> str:
    text = value if isinstance(value, (int, float, str)) else json.dumps(value, sort_keys=True)
    text = str(text)
    return text if len(text) <= 40 else text[:37] + "..."


def judge(run: CheckRun, base: bl.Baseline, base_path: Path, exact: bool, *,
          allow_improvement: bool, strict: bool) -> Report:  # fmt: skip
    per_rank = run.metrics()
    rows = policy.compare(base.metrics, per_rank)
    passed, problems = policy.outcome(rows, allow_improvement=allow_improvement, strict=strict)
    factors = run.factors()
    lines = [f"scenario {factors['scenario']}: {run.scenario.description}", f"baseline {base_path}"]
    if not exact:
        lines.append(f"torch version change: baseline {base.factors['torch']} -> running {factors['torch']}"
                     " (compared across versions; refresh to store this version's baseline)")  # fmt: skip
    if base.factors.get("config_hash") != factors["config_hash"]:
        lines.append(f"scenario config changed: {base.factors.get('config_hash')} -> {factors['config_hash']}")
    ranks = [f"rank{p['rank']}" for p in run.mesh_probes()]
    drivers = [p["rank"] for p in run.probes if p.get("role") == "driver"]
    if drivers:
        lines.append(f"rank{drivers[0]}: the driver, out of the mesh; compiles nothing, so it is reported apart"
                     f" (chunks done {run.probes[drivers[0]]['run']['chunks_done']})")  # fmt: skip
    lines.append(tabulate([[r.metric, _cell(r.baseline), *map(_cell, r.per_rank), r.verdict] for r in rows],
                          headers=["metric", "baseline", *ranks, "verdict"]))  # fmt: skip
    sites = run.mesh_probes()[0]["final"]["break_sites"]
    if sites:
        lines.append("graph-break sites (rank 0):")
        for s in sites:
            lines.append(f"  {s['site']}  {s['reason']}  x{s['count']}")
            lines.append(_source_around(s["site"]))
    steady = run.mesh_probes()[0]["steady_recompile_reasons"]
    for rec in steady:
        lines.append(f"recompile after warmup: {rec['frame']} at {rec['site']}: {rec['reason']}")
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


def expected_factors(scenario: Scenario) -> dict[str, Any]:
    """The factors a run of `scenario` will report, known before launching (to find its baseline)."""
    import torch

    from engine.config import DistConfig

    dist_cfg = DistConfig()
    return {
        "scenario": scenario.name,
        "torch": torch.__version__,
        "device_type": dist_cfg.resolved_device_type(),
        "compile_backend": scenario.compile,
        "dist_backend": dist_cfg.resolved_backend(),
        "world_size": scenario.nprocs,
        "config_hash": scenario.config_hash(),
    }
