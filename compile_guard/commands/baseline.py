"""`compile-guard baseline {refresh,show,diff}`: write (atomically), print and compare baselines.

`show` and `diff` only read files: they import no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from tabulate import tabulate

from compile_guard.commands.argtypes import positive_int
from compile_guard.commands.check import add_spec_args, job_from
from compile_guard.contracts.rank_job import RankJob
from compile_guard.contracts.rank_report import mesh
from compile_guard.flow.check_flow import run_and_judge
from compile_guard.flow.request import CheckRequest
from compile_guard.flow.scenarios import DEFAULT_SCENARIO, SCENARIOS
from compile_guard.health import baseline as bl
from compile_guard.health import policy
from compile_guard.health.schema import baseline_view
from compile_guard.launch.modes import Output, RunMode
from compile_guard.page import render
from compile_guard.page.pages import diff_page
from compile_guard.quality.rules import MIN_RUNS, keep_states
from compile_guard.quality.rules import between as between_quality
from compile_guard.quality.rules import describe as describe_quality
from compile_guard.verdict import Cli
from engine.atomic_json import write_text


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    refresh = actions.add_parser(
        "refresh",
        help="run the check and write its baseline (atomically)",
        description="Example: compile-guard baseline refresh --scenario tp2",
    )
    add_spec_args(refresh)
    refresh.add_argument(
        "--runs",
        type=positive_int,
        default=1,
        help=f"run the check this many times and keep every run's timings: with {MIN_RUNS} or more, the judge measures"
        " this machine's noise between runs from them instead of assuming it (default 1)",
    )
    refresh.add_argument("--baselines", type=Path, default=bl.DEFAULT_DIR)
    refresh.add_argument("--log-dir", type=Path, default=None)
    refresh.add_argument("--dump-dir", type=Path, default=None)
    show = actions.add_parser(
        "show", help="print a baseline", description="Example: compile-guard baseline show --scenario tp2"
    )
    show.add_argument("--scenario", default=DEFAULT_SCENARIO, choices=sorted(SCENARIOS))
    show.add_argument("--file", type=Path, default=None, help="a baseline file (instead of --scenario)")
    show.add_argument("--baselines", type=Path, default=bl.DEFAULT_DIR)
    diff = actions.add_parser(
        "diff",
        help="compare two baseline files (e.g. torch 2.13 vs 2.14)",
        description="Example: compile-guard baseline diff baselines/A.json baselines/B.json",
    )
    diff.add_argument("a", type=Path)
    diff.add_argument("b", type=Path)
    diff.add_argument("--html", type=Path, default=None, help="one self-contained HTML page of the diff")


def _metric_table(metrics: dict[str, Any]) -> str:
    return tabulate(
        [[k, json.dumps(v, sort_keys=True)[:100]] for k, v in sorted(metrics.items())], headers=["metric", "value"]
    )


def refresh(args: argparse.Namespace, mode: RunMode) -> int:
    """In place every rank runs and reaches the same verdict; the mode's output prints and writes on one."""
    out = mode.out
    job = job_from(args, out)
    if isinstance(job, int):
        return job
    path = args.baselines / bl.file_name(bl.Factors.expected(job))
    previous = None
    if os.path.lexists(path):  # what is replaced must have been a baseline: never clobber anything else
        try:
            previous = bl.load(path)
        except bl.BaselineError as exc:
            out.print(f"baseline file error: {exc}; refusing to replace it — move it away first", err=True)
            return Cli.USAGE
    from compile_guard.ranks import check as check_program  # torch: imported once a refresh runs

    request = CheckRequest(
        job=job,
        program=check_program,
        baselines=args.baselines,
        need_baseline=False,
        log_dir=args.log_dir,
        dump_dir=args.dump_dir,
        progress=True,
    )
    runs = []
    for i in range(args.runs):
        if args.runs > 1:
            out.print(f"refresh run {i + 1} of {args.runs}")
        judged = run_and_judge(request, mode)
        checked = judged.run
        if checked is None or checked.reports is None:
            out.print(judged.report.text)
            return judged.report.exit_code
        runs.append(checked.reports)
    first = bl.Baseline.of(job, runs[0])
    moved = sorted({k for r in runs[1:] for k in bl.Baseline.of(job, r).moved_from(first)})
    if moved:
        out.print(
            f"refusing to write a baseline: the {args.runs} runs compiled differently ({moved} moved between runs):"
            " the program does not compile the same way twice; find out why before gating on it",
            err=True,
        )
        return Cli.FAIL
    per_rank = [baseline_view(r.health) for r in mesh(runs[-1])]
    empty = policy.nothing_compiled(per_rank, compile_on=job.spec.compile != "off")
    if empty:
        out.print(
            f"refusing to write a baseline with no graph while compile is on (graphs per rank"
            f" {empty[0].per_rank}): compile did not happen — a baseline of zeros would pass every broken run",
            err=True,
        )
        return Cli.FAIL
    new = bl.Baseline.pooled(job, runs)  # every run's timings: the judge measures this machine's noise from them
    assert bl.file_name(new.factors) == path.name, (new.factors, path)  # check finds it by the same prediction
    if previous is not None and previous.factors == new.factors:
        quality, kept = keep_states(new.quality, previous.quality)
        new = dataclasses.replace(new, quality=quality)
        for note in kept:
            out.print(f"note: {note}")
    failing = sorted(
        {o for entry in new.quality.values() for o, v in entry.get("accuracy", {}).items() if v["status"] == "fail"}
    )
    if failing:
        out.print(
            f"note: outputs {failing} fail the accuracy rule in this run and are recorded so: a later failure"
            " of theirs is not a regression (docs/check.md)"
        )
    out.write(bl.write, path, new)
    out.print(f"wrote {path}")
    out.print(_change(previous, new, out))
    return Cli.OK


def _change(previous: bl.Baseline | None, new: bl.Baseline, out: Output) -> str:
    """What the refresh changed: the whole table for a first baseline, else the metrics that moved."""
    if previous is None:
        return _metric_table(new.metrics)
    rows = [r for r in policy.compare(previous.metrics, _as_in(previous, new, out)) if r.verdict != policy.OK]
    if not rows:
        return "unchanged"
    return tabulate(
        [[r.metric, json.dumps(r.baseline)[:50], json.dumps(r.per_rank[0])[:50], r.verdict] for r in rows],
        headers=["metric", "before", "after", "verdict"],
    )


def _shown(args: argparse.Namespace) -> Path | None:
    """--file, or the scenario's baseline for the installed torch (any device type), else the newest other."""
    if args.file:
        return args.file
    job = RankJob(spec=SCENARIOS[args.scenario])
    for device_type in ("cpu", "cuda"):
        found = bl.find(args.baselines, bl.Factors.expected(job, device_type=device_type))
        if found is not None:
            return found[0]
    return None


def _as_in(a: bl.Baseline, b: bl.Baseline, out: Output = Output(leader=True)) -> list[dict[str, Any]]:
    """B's metrics to compare with A's: across torch releases, break reasons only renamed are keyed as A's."""
    if a.factors.torch == b.factors.torch:
        return [b.metrics]
    metrics, notes = policy.across_releases(a.metrics, a.break_sites, [b.metrics], [b.break_sites])
    for note in notes:
        out.print(f"note: {note}")
    return metrics


def show(args: argparse.Namespace, out: Output) -> int:
    path = _shown(args)
    if path is None:
        out.print(f"no baseline for scenario {args.scenario} in {args.baselines}", err=True)
        return Cli.USAGE
    base = bl.load(path)
    out.print(f"{path}\n" + tabulate(sorted(base.factors.as_dict().items()), headers=["factor", "value"]))
    out.print(_metric_table(base.metrics))
    for rank, entry in sorted(base.quality.items()):
        out.print(f"quality {rank}: {describe_quality(entry)}")
    for note in base.notes:
        out.print(f"note: {note}")
    return Cli.OK


def diff(args: argparse.Namespace, out: Output) -> int:
    a, b = bl.load(args.a), bl.load(args.b)
    fa, fb = a.factors.as_dict(), b.factors.as_dict()
    changed = [k for k in bl.FACTOR_KEYS if fa[k] != fb[k]]
    out.print(
        f"A = {args.a}\nB = {args.b}\nfactors that differ: "
        + (", ".join(f"{k}: {fa[k]} -> {fb[k]}" for k in changed) or "none")
    )
    rows = policy.compare(a.metrics, _as_in(a, b, out))
    table = tabulate(
        [[r.metric, json.dumps(r.baseline)[:40], json.dumps(r.per_rank[0])[:40], r.verdict] for r in rows],
        headers=["metric", "A", "B", "B vs A"],
    )
    out.print(table)
    quality = between_quality(a.quality, b.quality)
    out.print("quality (A -> B): " + "; ".join(quality))
    for note in (*a.notes, *b.notes):
        out.print(f"note: {note}")
    if args.html:
        sides = [
            {"path": str(p), "factors": x.factors.as_dict(), "quality": x.quality}
            for p, x in ((args.a, a), (args.b, b))
        ]
        page = diff_page(*sides, [dataclasses.asdict(r) for r in rows], quality, text=table)
        out.write(write_text, args.html, render.html(page, args.html))
    return Cli.OK


def run(args: argparse.Namespace, mode: RunMode) -> int:
    if args.action == "refresh":
        return refresh(args, mode)
    try:
        return show(args, mode.out) if args.action == "show" else diff(args, mode.out)
    except bl.BaselineError as exc:
        mode.out.print(f"baseline file error: {exc}", err=True)
        return Cli.USAGE
