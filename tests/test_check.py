"""`check` end to end through the CLI. Topology: TP=2, gloo, CPU (scenarios tp2 = inductor,
tp2-aot = aot_eager); the CLI launches and supervises the ranks with a deadline."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from compile_guard.contracts.rank_job import RankJob
from compile_guard.contracts.rank_report import RankReport
from compile_guard.flow import report
from compile_guard.flow.check_run import CheckRun
from compile_guard.flow.judge import judge
from compile_guard.flow.request import CheckRequest, find_baseline
from compile_guard.flow.scenarios import SCENARIOS
from compile_guard.health import baseline as bl
from compile_guard.health.settings import settings_payload
from compile_guard.ranks import check
from tests.conftest import CLI_TIMEOUT_S, REPO, committed_baseline


def _cli(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compile_guard", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_default_scenario_passes_strictly_against_the_committed_baseline(tmp_path, processes):
    """--strict: not even a fingerprint or guard count may have moved since the baseline was committed. Its
    timings are another machine's (or this one's at another time): reported, never judged in a test."""
    committed_baseline("tp2")  # this torch's own (skips, saying how to write it, on a torch without one)
    proc = _cli(
        "check",
        "--strict",
        "--timings",
        "report",
        "--json",
        str(tmp_path / "check.json"),
        "--log-dir",
        str(tmp_path / "logs"),
        "--dump-dir",
        str(tmp_path / "dumps"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in (0, 1):  # depyf under inductor (the load_by_key_path wrapper): decompiled frames and kernels
        dumped = [p.name for p in (tmp_path / "dumps" / f"rank{rank}").iterdir()]
        assert any(n.startswith("full_code_for_forward") for n in dumped), dumped
        assert any(".kernel_" in n for n in dumped), dumped
    traces = [t.name for t in (tmp_path / "dumps" / "torch_trace").iterdir()]  # TORCH_TRACE, for tlparse
    assert any("rank_0" in t for t in traces) and any("rank_1" in t for t in traces), traces
    assert "handshake compile" in proc.stdout and "warmup done" in proc.stdout  # progress lines
    assert "PASS" in proc.stdout and "changed" not in proc.stdout
    for rank in (0, 1):  # the harness makes torch (or depyf) warn about nothing
        assert "Warning" not in (tmp_path / "logs" / f"rank{rank}.log").read_text()
    assert max(len(line) for line in proc.stdout.splitlines() if "|" not in line) <= 120  # the table fits
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["passed"] and report["exact_baseline"]
    assert report["factors"]["scenario"] == "tp2"
    finals = [p["final"] for p in report["probes"]]
    assert [f["unique_graphs"] for f in finals] == [1, 1]  # functional collectives: one graph per rank
    assert [f["graph_breaks"] for f in finals] == [0, 0]
    assert [f["collectives_in_graphs"] for f in finals] == [20, 20]  # 4 blocks x 5 all-reduces


def test_missing_baseline_exits_2_with_the_refresh_command(tmp_path, quick_process):
    proc = _cli("check", "--scenario", "tp2-aot", "--baselines", str(tmp_path))
    assert proc.returncode == 2
    assert "baseline refresh --scenario tp2-aot" in proc.stderr


def test_corrupt_baseline_exits_2_naming_the_file(tmp_path, quick_process):
    path = tmp_path / bl.file_name(bl.Factors.expected(RankJob(spec=SCENARIOS["tp2-aot"])).as_dict())
    path.write_text('{"schema": 1, "factors": ')
    proc = _cli("check", "--scenario", "tp2-aot", "--baselines", str(tmp_path))
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "not valid JSON" in proc.stderr


def test_unknown_scenario_exits_2(quick_process):
    proc = _cli("check", "--scenario", "tp9")
    assert proc.returncode == 2 and "--scenario 'tp9' is unknown" in proc.stderr


def test_foreign_torch_version_is_compared_and_stated(tmp_path, processes):
    factors = bl.Factors.expected(RankJob(spec=SCENARIOS["tp2-aot"])).as_dict()
    base = bl.load(committed_baseline("tp2-aot"))
    foreign = dataclasses.replace(base.factors, torch="2.12.0+cpu")
    bl.write(tmp_path / bl.file_name(foreign), bl.Baseline(factors=foreign, metrics=base.metrics, break_sites=[]))
    proc = _cli("check", "--scenario", "tp2-aot", "--baselines", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"torch version change: baseline 2.12.0+cpu -> running {factors['torch']}" in proc.stdout


def _run_of(metrics: dict, spec) -> CheckRun:
    """A finished 2-rank run whose every rank reports `metrics` (in process: the judge, not the ranks, is tested),
    its reports read as the parent reads a rank's."""
    from compile_guard.health.schema import CompileHealth, Observations, symmetric_view

    final = {
        **CompileHealth.measure(
            Observations(graph_count=0, graphs=[], schedules=[], break_reasons={}, break_sites=[], compiles=[])
        ).to_json(),
        **metrics,
    }
    wire = {
        "scenario": spec.name,
        "role": "mesh",
        "run": {},
        "final": final,
        "warmup": symmetric_view(final),
        "effective_backend": metrics["effective_backend"],
    }
    reports = [RankReport.from_dict({**wire, "rank": r}, what=f"rank {r}'s report") for r in (0, 1)]
    return CheckRun(job=RankJob(spec=spec), result=None, reports=reports, log_dir=None)


def test_improvement_fails_unless_allowed_and_names_the_refresh_command():
    """A baseline with more breaks than today's run: an improvement, exit 1 unless allowed; the hint is the refresh
    command of this very spec (a scenario here; test_target covers --target's). The policy itself: test_policy.
    The judge is a function of typed values: called here with no process, no file written."""
    spec = SCENARIOS["tp2-aot"]
    request = CheckRequest(job=RankJob(spec=spec), program=check, baselines=bl.DEFAULT_DIR)
    found = find_baseline(request)
    committed = found.baseline
    base = bl.Baseline(factors=committed.factors, metrics={**committed.metrics, "graph_breaks": 3}, break_sites=[])
    found = dataclasses.replace(found, baseline=base)
    run = _run_of(committed.metrics, spec)
    refresh = request.refresh_command()
    failed = report.report_of(judge(run.reports, found, request), judging=request.judging, log_dir=None)
    assert failed.exit_code == 1
    assert "graph_breaks: 3 -> [0, 0] (improvement" in failed.text
    assert f"run `{refresh}` (or pass --allow-improvement)" in failed.text and "--scenario tp2-aot" in refresh
    lenient = dataclasses.replace(request, allow_improvement=True)
    allowed = report.report_of(judge(run.reports, found, lenient), judging=request.judging, log_dir=None)
    assert allowed.exit_code == 0, allowed.text


def test_pp1_compares_mesh_ranks_and_reports_rank0_apart(tmp_path, processes):
    """PP1 scenario: 3 ranks; the handshakes and the compile-health gather run inside the mesh."""
    proc = _cli("check", "--scenario", "pp1", "--timings", "report", "--json", str(tmp_path / "pp1.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # compile.{enabled,backend,mode,fullgraph,dynamic} + every compared setting + the job's options (no target: 1,
    # agreement: 5, measure: 8)
    keys = 5 + len(settings_payload()) + 1 + 5 + 8
    assert f"handshake compile: {keys} keys equal on ranks [1, 2]" in proc.stdout
    assert "rank0: the driver, out of the mesh" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("metric"))
    assert header.split()[1:4] == ["baseline", "rank1", "rank2"]
    report = json.loads((tmp_path / "pp1.json").read_text())
    assert [p.get("role") for p in report["probes"]] == ["driver", "mesh", "mesh"]


def test_every_committed_baseline_of_this_torch_matches_todays_config():
    """A baseline whose config hash is stale compares against another program: exit 2 (below). So every
    committed one for the installed torch must carry its scenario's hash of today."""
    for name, spec in SCENARIOS.items():
        path = committed_baseline(name)
        assert bl.load(path).factors.config_hash == RankJob(spec=spec).config_hash(), f"{path} is stale: refresh it"


def test_a_baseline_for_another_configuration_exits_2(tmp_path, quick_process):
    committed = bl.load(bl.find(bl.DEFAULT_DIR, bl.Factors.expected(RankJob(spec=SCENARIOS["tp2-aot"])).as_dict())[0])
    factors = dataclasses.replace(committed.factors, config_hash="0123456789abcdef")
    bl.write(tmp_path / bl.file_name(factors), bl.Baseline(factors=factors, metrics=committed.metrics, break_sites=[]))
    proc = _cli("check", "--scenario", "tp2-aot", "--baselines", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is for another configuration" in proc.stderr and "baseline refresh --scenario tp2-aot" in proc.stderr


def test_compile_disabled_on_every_rank_is_a_regression_not_an_improvement(tmp_path, processes):
    """TP=2, gloo, aot_eager, TORCH_COMPILE_DISABLE=1 on both ranks: symmetric, so no handshake objects;
    0 graphs while compile is on, and the collectives left the graph — even --allow-improvement fails."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "compile_guard",
            "check",
            "--scenario",
            "tp2-aot",
            "--allow-improvement",
            "--no-quality",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, "TORCH_COMPILE_DISABLE": "1"},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "compile is on, yet rank0, rank1 compiled no graph" in proc.stdout
    assert "FAIL collectives_in_graphs: 20 -> [0, 0] (regression)" in proc.stdout


def test_dump_dir_works_on_code_with_graph_breaks(tmp_path, processes):
    """TP=2, gloo, aot_eager, collectives behind torch.compiler.disable(): 10 breaks per rank. The dump
    holds the decompiled frames on both sides of a break, and the verdict is the regression (exit 1)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "compile_guard",
            "check",
            "--scenario",
            "tp2-aot",
            "--no-quality",
            "--dump-dir",
            str(tmp_path / "dumps"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, "COMPILE_GUARD_COLLECTIVE_PATH": "disabled_inplace"},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for rank in (0, 1):
        dumped = {p.name for p in (tmp_path / "dumps" / f"rank{rank}").iterdir()}
        assert any(n.startswith("__transformed_code_") and n.endswith("_for_forward.py") for n in dumped), dumped
        resumed = [n for n in dumped if "_for_torch_dynamo_resume_in_forward_at_" in n]  # after a break
        assert resumed, dumped
        assert "def " in (tmp_path / "dumps" / f"rank{rank}" / resumed[0]).read_text()  # decompiled source
