"""`compile-guard check`: a scenario's (or a target's) compile health against its stored baseline."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tabulate import tabulate

from compile_guard.commands.argtypes import factor, fraction, positive_int, positive_seconds
from compile_guard.contracts.rank_job import Agreement, RankJob
from compile_guard.flow.check_flow import run_and_judge
from compile_guard.flow.junit import Case, write_junit
from compile_guard.flow.report import Report, markdown_summary, page_of
from compile_guard.flow.request import CheckRequest
from compile_guard.flow.scenarios import DEFAULT_SCENARIO, SCENARIOS, resolve
from compile_guard.health import baseline as bl
from compile_guard.launch.modes import Output, RunMode
from compile_guard.page import render
from compile_guard.quality.options import COMPILE_TIME_MODES, JUDGE, OFF, REPORT, Judging, Measure
from compile_guard.verdict import Cli
from engine.atomic_json import write_json, write_text
from engine.errors import ConfigError, RankCrashed

DESCRIPTION = (
    "Launch the scenario's ranks; handshakes (env, compile, effective backend), lockstep warmup, per-rank compile "
    "health gathered and required equal across ranks, steady state, then a diff against the stored baseline. "
    "Example: compile-guard check --scenario tp2 --json out.json"
)


def add_spec_args(parser: argparse.ArgumentParser) -> None:
    """What picks the run spec: shared by check and baseline refresh."""
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO, help=f"named config (default {DEFAULT_SCENARIO})")
    parser.add_argument("--target", default=None, help="your own model: package.module:factory (docs/targets.md)")
    parser.add_argument("--nproc", type=positive_int, default=2, help="with --target: ranks (= TP degree)")
    parser.add_argument(
        "--backend",
        default="inductor",
        choices=["inductor", "aot_eager", "eager"],
        help="with --target: compile backend",
    )
    parser.add_argument(
        "--stall-s",
        type=positive_seconds,
        default=None,
        help="agreements: seconds without progress from a peer before every rank's position is"
        " reported and every rank stops (default: a margin under the group timeout, 27 of 30)",
    )
    parser.add_argument(
        "--eager-ledger",
        action="store_true",
        help="ranks also agree on every eager c10d collective before it is issued",
    )
    parser.add_argument(
        "--no-input-agreement",
        action="store_true",
        help="with --target: skip the per-step input signature agreement (ranks feed other shapes)",
    )
    quality = parser.add_argument_group("quality (docs/check.md argues each default)")
    quality.add_argument("--no-accuracy", action="store_true", help="skip compiled vs eager vs fp64 per output")
    quality.add_argument("--no-parity", action="store_true", help="skip the cross-rank check of replicated outputs")
    quality.add_argument("--no-speed", action="store_true", help="skip the eager/compiled step timing")
    quality.add_argument("--no-memory", action="store_true", help="skip peak device memory (CUDA)")
    quality.add_argument("--no-quality", action="store_true", help="all of the above and compile time: structure only")
    quality.add_argument(
        "--compile-time",
        choices=list(COMPILE_TIME_MODES),
        default="auto",
        help="auto: the run's own compile as the cache is (an empty inductor cache: cold, judged; a warm one:"
        " warm); cold: an empty inductor cache of each rank's own, then warm again from it; off",
    )
    quality.add_argument(
        "--repeats",
        type=positive_int,
        default=Measure.repeats,
        help=f"eager/compiled step pairs of the judged speed figure per rank (default {Measure.repeats})",
    )
    quality.add_argument(
        "--tolerance",
        type=fraction,
        default=None,
        help="accuracy tolerance for every dtype (default per dtype: fp32 1e-4, fp16/bf16 1e-2)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    add_spec_args(parser)
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--baselines", type=Path, default=bl.DEFAULT_DIR, help="baseline directory")
    parser.add_argument("--json", type=Path, default=None, help="write everything here")
    parser.add_argument("--junit", type=Path, default=None, help="JUnit XML: one testcase per metric")
    parser.add_argument("--dump-dir", type=Path, default=None, help="depyf dumps per rank")
    parser.add_argument("--log-dir", type=Path, default=None, help="per-rank logs (default: a temp dir)")
    parser.add_argument("--allow-improvement", action="store_true", help="fewer breaks/graphs than baseline passes")
    parser.add_argument("--strict", action="store_true", help="changed fingerprints/backend fail too")
    parser.add_argument("--summary", type=Path, default=None, help="a Markdown summary for the CI job's page")
    parser.add_argument(
        "--html", type=Path, default=None, help="one self-contained HTML page of the report, to open or attach"
    )
    judging = parser.add_argument_group("quality judging (docs/check.md)")
    judging.add_argument(
        "--speed-factor",
        type=factor,
        default=Judging.speed_factor,
        help="the compiled step's growth against eager to catch: a speedup below the baseline's / this"
        f" (default {Judging.speed_factor}: 0.952x); fails when significant and over half of it",
    )
    judging.add_argument(
        "--alpha",
        type=fraction,
        default=Judging.alpha,
        help=f"the timing tests' one-sided level, per rank (default {Judging.alpha})",
    )
    judging.add_argument(
        "--speed-noise",
        type=fraction,
        default=Judging.speed_noise,
        help=f"relative sd of a run's speedup between runs on this machine (default {Judging.speed_noise})",
    )
    judging.add_argument(
        "--compile-factor",
        type=factor,
        default=Judging.compile_factor,
        help="compile CPU seconds grown by this factor are caught; fails when significant and over half"
        f" of it (default {Judging.compile_factor})",
    )
    judging.add_argument(
        "--compile-noise",
        type=fraction,
        default=Judging.compile_noise,
        help=f"relative sd of a run's compile ratio between runs on this machine (default {Judging.compile_noise})",
    )
    judging.add_argument(
        "--memory-factor",
        type=factor,
        default=Judging.memory_factor,
        help=f"peak memory compiled/eager above the baseline's x this fails (default {Judging.memory_factor})",
    )
    judging.add_argument(
        "--timings",
        choices=[JUDGE, REPORT],
        default=Judging.timings,
        help="judge speed and compile time against a baseline from the same machine kind, or only report them"
        f" (default {Judging.timings})",
    )


def job_from(args: argparse.Namespace, out: Output) -> RankJob | int:
    """The job the flags pick; else the exit code, the error printed on `out`: 2 when they pick none, 3 when
    the target's own module raised while importing (the code under test crashed, not the command line)."""
    try:
        job = resolve(scenario_name=args.scenario, target=args.target, nprocs=args.nproc, backend=args.backend)
        measure = (
            OFF
            if args.no_quality
            else Measure(
                accuracy=not args.no_accuracy,
                parity=not args.no_parity,
                speed=not args.no_speed,
                memory=not args.no_memory,
                compile_time=args.compile_time,
                repeats=args.repeats,
                tolerance=args.tolerance or 0.0,
            )
        )
        agreement = Agreement(
            stall_s=args.stall_s or 0.0, eager_ledger=args.eager_ledger, inputs=not args.no_input_agreement
        )
        return dataclasses.replace(job, agreement=agreement, measure=measure)
    except ConfigError as exc:  # UnknownScenario, TargetError
        out.print(f"input error: {exc}", err=True)
        return Cli.USAGE
    except RankCrashed as exc:  # TargetCrashed: the traceback is logged above
        out.print(f"target failure: {exc}", err=True)
        return Cli.ENGINE


def run(args: argparse.Namespace, mode: RunMode) -> int:
    """Every rank in place judges the same data (or settles the same code) and returns it; the mode's output
    prints and writes on the one that speaks for the job."""
    if args.list:
        mode.out.print(
            tabulate(
                [[s.name, s.nprocs, s.compile, s.description] for s in SCENARIOS.values()],
                headers=["scenario", "ranks", "backend", "description"],
            )
        )
        return Cli.OK
    job = job_from(args, mode.out)
    if isinstance(job, int):
        return job
    judging = Judging(
        speed_factor=args.speed_factor,
        alpha=args.alpha,
        speed_noise=args.speed_noise,
        compile_factor=args.compile_factor,
        compile_noise=args.compile_noise,
        memory_factor=args.memory_factor,
        timings=args.timings,
    )
    from compile_guard.ranks import check as check_program  # torch: imported once a check runs, not for --help

    request = CheckRequest(
        job=job,
        program=check_program,
        baselines=args.baselines,
        allow_improvement=args.allow_improvement,
        strict=args.strict,
        judging=judging,
        log_dir=args.log_dir,
        dump_dir=args.dump_dir,
        progress=True,
    )
    judged = run_and_judge(request, mode)
    report, out = judged.report, mode.out
    out.print(report.text, err=judged.run is None)
    if judged.run is None:
        return report.exit_code  # nothing ran: no baseline to judge against
    if args.json:
        out.write(write_json, args.json, report.data)
    if args.junit:
        out.write(write_junit, args.junit, f"check.{job.name}", junit_cases(job.name, report))
    if args.summary:
        out.write(write_text, args.summary, markdown_summary(job.name, report))
    if args.html:
        out.write(write_text, args.html, render.html(page_of(report, job.name), args.html))
    return report.exit_code


def junit_cases(scenario: str, report: Report) -> list[Case]:
    classname = f"compile_guard.check.{scenario}"
    if "rows" not in report.data:  # the run itself failed: one failing case with the log tail
        return [Case(name="run", classname=classname, failure=report.text, message=report.data.get("verdict", ""))]
    cases = []
    for row in report.data["rows"]:
        failed = row["metric"] in report.data["failing_metrics"]
        diff = f"{row['metric']}: baseline {json.dumps(row['baseline'])} -> per rank {json.dumps(row['per_rank'])}"
        cases.append(
            Case(
                name=row["metric"],
                classname=classname,
                failure=diff if failed else None,
                message=f"{row['verdict']}: {diff}"[:200],
            )
        )
    return cases
