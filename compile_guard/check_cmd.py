"""`check` and `baseline {refresh,show,diff}`: argument handling, printing, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

from compile_guard import baseline as bl
from compile_guard import policy
from compile_guard.check import EXIT_OK, EXIT_USAGE, expected_factors, failure_report, judge, run_check
from compile_guard.junit import Case, write_junit
from compile_guard.scenarios import DEFAULT_SCENARIO, SCENARIOS, Scenario, target_scenario
from compile_guard.target import TargetError, load_factory
from engine.atomic_json import write_json


def add_check_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO, help=f"named config (default {DEFAULT_SCENARIO})")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--baselines", type=Path, default=bl.DEFAULT_DIR, help="baseline directory")
    parser.add_argument("--json", type=Path, default=None, help="write everything here")
    parser.add_argument("--junit", type=Path, default=None, help="JUnit XML: one testcase per metric")
    parser.add_argument("--dump-dir", type=Path, default=None, help="depyf dumps per rank")
    parser.add_argument("--log-dir", type=Path, default=None, help="per-rank logs (default: a temp dir)")
    parser.add_argument("--allow-improvement", action="store_true", help="fewer breaks/graphs than baseline passes")
    parser.add_argument("--strict", action="store_true", help="changed fingerprints/backend fail too")
    parser.add_argument("--target", default=None, help="your own model: package.module:factory (docs/targets.md)")
    parser.add_argument("--nproc", type=int, default=2, help="with --target: ranks (= TP degree)")
    parser.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager", "eager"],
                        help="with --target: compile backend")  # fmt: skip


def _scenario(name: str) -> Scenario | None:
    if name not in SCENARIOS:
        print(f"--scenario {name!r} is unknown; known: {sorted(SCENARIOS)} (see check --list)", file=sys.stderr)
        return None
    return SCENARIOS[name]


def _scenario_of(args: argparse.Namespace) -> Scenario | None:
    """--target's scenario (its factory loadable: a typo fails before any rank starts), or --scenario's."""
    if args.target is None:
        return _scenario(args.scenario)
    try:
        load_factory(args.target)
    except TargetError as exc:
        print(f"input error: {exc}", file=sys.stderr)
        return None
    return target_scenario(args.target, nprocs=args.nproc, backend=args.backend)


def _progress(event: dict[str, Any]) -> None:
    if event["event"] == "parity_ok":
        print(f"  handshake {event['handshake']}: {event['keys']} keys equal on ranks {event['ranks']}", flush=True)
    elif event.get("phase") == "warmup_done":
        print(f"  warmup done: unique_graphs={event['unique_graphs']} graph_breaks={event['graph_breaks']}"
              f" recompiles={event['recompiles']}", flush=True)  # fmt: skip
    else:
        print(f"  steady chunk {event['chunk_index']} done ({event['generator_calls']} generator calls)", flush=True)


def _run(scenario: Scenario, args: argparse.Namespace):
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="compile_guard_check_"))
    print(f"check {scenario.name}: launching {scenario.nprocs} ranks (logs: {log_dir})", flush=True)
    started = time.monotonic()
    run = run_check(scenario, log_dir=log_dir, dump_dir=args.dump_dir, on_progress=_progress)
    print(f"  ranks done in {time.monotonic() - started:.1f}s", flush=True)
    return run


def check_command(args: argparse.Namespace) -> int:
    if args.list:
        print(tabulate([[s.name, s.nprocs, s.compile, s.description] for s in SCENARIOS.values()],
                       headers=["scenario", "ranks", "backend", "description"]))  # fmt: skip
        return EXIT_OK
    scenario = _scenario_of(args)
    if scenario is None:
        return EXIT_USAGE
    refresh = f"python -m compile_guard baseline refresh --scenario {scenario.name}"
    if scenario.target is not None:
        refresh = (f"python -m compile_guard baseline refresh --target {scenario.target} --nproc {scenario.nprocs}"
                   f" --backend {scenario.compile} --baselines {args.baselines}")  # fmt: skip
    found = bl.find(args.baselines, expected_factors(scenario))
    if found is None:
        name = bl.file_name(expected_factors(scenario))
        print(f"no baseline for scenario {scenario.name} in {args.baselines} (looked for {name});"
              f" create it with `{refresh}`", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    path, exact = found
    try:
        base = bl.load(path)
    except bl.BaselineError as exc:
        print(f"baseline file error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run = _run(scenario, args)
    report = failure_report(run) if run.probes is None else judge(
        run, base, path, exact, allow_improvement=args.allow_improvement, strict=args.strict)  # fmt: skip
    print(report.text)
    if args.json:
        write_json(args.json, report.data)
    if args.junit:
        write_junit(args.junit, f"check.{scenario.name}", _junit_cases(scenario.name, report))
    return report.exit_code


def _junit_cases(scenario: str, report: Any) -> list[Case]:
    classname = f"compile_guard.check.{scenario}"
    if "rows" not in report.data:  # the run itself failed: one failing case with the log tail
        return [Case(name="run", classname=classname, failure=report.text, message=report.data.get("verdict", ""))]
    cases = []
    for row in report.data["rows"]:
        failed = row["metric"] in report.data["failing_metrics"]
        diff = f"{row['metric']}: baseline {json.dumps(row['baseline'])} -> per rank {json.dumps(row['per_rank'])}"
        cases.append(Case(name=row["metric"], classname=classname, failure=diff if failed else None,
                          message=f"{row['verdict']}: {diff}"[:200]))  # fmt: skip
    return cases


def _metric_table(metrics: dict[str, Any]) -> str:
    return tabulate([[k, json.dumps(v, sort_keys=True)[:100]] for k, v in sorted(metrics.items())],
                    headers=["metric", "value"])  # fmt: skip


def baseline_command(args: argparse.Namespace) -> int:
    if args.action == "refresh":
        scenario = _scenario_of(args)
        if scenario is None:
            return EXIT_USAGE
        run = _run(scenario, args)
        if run.probes is None:
            report = failure_report(run)
            print(report.text)
            return report.exit_code
        new = run.to_baseline()
        path = args.baselines / bl.file_name(new.factors)
        previous = None
        if path.exists():
            try:
                previous = bl.load(path)
            except bl.BaselineError as exc:
                print(f"replacing unreadable baseline: {exc}")
        bl.write(path, new)
        print(f"wrote {path}")
        if previous is None:
            print(_metric_table(new.metrics))
        else:
            rows = [r for r in policy.compare(previous.metrics, [new.metrics]) if r.verdict != policy.OK]
            print("unchanged" if not rows else tabulate(
                [[r.metric, json.dumps(r.baseline)[:50], json.dumps(r.per_rank[0])[:50], r.verdict] for r in rows],
                headers=["metric", "before", "after", "verdict"]))  # fmt: skip
        return EXIT_OK
    try:
        if args.action == "show":
            target = args.file or bl.find(args.baselines, expected_factors(SCENARIOS[args.scenario]))
            path = Path(target[0] if isinstance(target, tuple) else target) if target else None
            if path is None:
                print(f"no baseline for scenario {args.scenario} in {args.baselines}", file=sys.stderr)
                return EXIT_USAGE
            base = bl.load(path)
            print(f"{path}\n" + tabulate(sorted(base.factors.items()), headers=["factor", "value"]))
            print(_metric_table(base.metrics))
            return EXIT_OK
        a, b = bl.load(args.a), bl.load(args.b)
    except bl.BaselineError as exc:
        print(f"baseline file error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    changed = [k for k in bl.FACTOR_KEYS if a.factors.get(k) != b.factors.get(k)]
    print(f"A = {args.a}\nB = {args.b}\nfactors that differ: "
          + (", ".join(f"{k}: {a.factors.get(k)} -> {b.factors.get(k)}" for k in changed) or "none"))  # fmt: skip
    rows = policy.compare(a.metrics, [b.metrics])
    print(tabulate([[r.metric, json.dumps(r.baseline)[:40], json.dumps(r.per_rank[0])[:40], r.verdict] for r in rows],
                   headers=["metric", "A", "B", "B vs A"]))  # fmt: skip
    return EXIT_OK
