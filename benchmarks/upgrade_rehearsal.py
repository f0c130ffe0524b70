"""Upgrade day, rehearsed for real: run `check` on a newer torch against the old baselines.

    make upgrade-rehearsal            # builds .venv-torch-upgrade with torch 2.14.1, runs this there

Per scenario: (1) `check` against the stored baselines of the *previous* torch (what a
user sees on upgrade day: the version change stated, every metric that moved, per break
reason and site), (2) `baseline refresh` writes this torch's baseline, (3) `baseline diff`
shows old vs new side by side. Ends with a table of what moved, a table of what the release did to accuracy,
speed and compile time (check --compile-time cold against the old baseline's cold entry), and the wall time;
then one HTML page of it all (--html; each scenario's check page under the summary).
Not in the default test run (the CUDA build of torch is a ~5 GB venv).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from compile_guard.flow.scenarios import SCENARIOS
from compile_guard.health import baseline as bl
from compile_guard.page import render
from compile_guard.page.check_page import check_page
from compile_guard.page.model import Difference
from compile_guard.page.pages import collection
from compile_guard.quality import rules
from engine.atomic_json import write_text

REPO = Path(__file__).resolve().parent.parent
QUALITY_COLUMNS = (rules.ACCURACY, rules.SPEEDUP, rules.compile_metric("cold"), rules.compile_metric("rewarm"))


def _cell(report: dict, metric: str) -> str:
    row = next((r for r in report.get("rows", []) if r["metric"] == metric), None)
    return "-" if row is None else f"{row['baseline']} -> {row['per_rank'][0]} ({row['verdict']})"


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "compile_guard", *args], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    print(proc.stdout, end="")
    print(proc.stderr, end="", file=sys.stderr)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="tp2,tp2-aot,pp1")
    parser.add_argument("--from-torch", default="2.13.0+cpu", help="the torch version upgraded from")
    parser.add_argument("--html", type=Path, default=None, help="the rehearsal's page (default: in the reports dir)")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="upgrade_rehearsal_"))
    started, summary, quality, parts = time.monotonic(), [], [], []
    for name in args.scenarios.split(","):
        factors = bl.Factors.expected(SCENARIOS[name]).as_dict()
        old_path = bl.DEFAULT_DIR / bl.file_name({**factors, "torch": args.from_torch})
        if not old_path.exists():
            print(f"{name}: no torch {args.from_torch} baseline ({old_path.name}); skipped")
            continue
        # Only the old baseline in view: exactly what a user sees before refreshing.
        before = out / "before" / name
        before.mkdir(parents=True)
        shutil.copy(old_path, before)
        print(f"\n===== {name}: check on torch {torch.__version__} against {old_path.name} =====")
        t0 = time.monotonic()
        # --compile-time cold: a new torch's first compile misses every cache anyway; cold is what the baseline's
        # cold entry (refreshed with --compile-time cold) is compared with
        check = cli(
            "check",
            "--scenario",
            name,
            "--baselines",
            str(before),
            "--json",
            str(out / f"{name}.json"),
            "--compile-time",
            "cold",
        )
        report = json.loads((out / f"{name}.json").read_text()) if (out / f"{name}.json").exists() else {}
        parts.append(check_page(report, exit_code=check.returncode, text=check.stdout + check.stderr))
        moved = [f"{r['metric']} ({r['verdict']})" for r in report.get("rows", []) if r["verdict"] != "ok"]
        quality.append([name, *(_cell(report, metric) for metric in QUALITY_COLUMNS)])
        print(f"\n===== {name}: baseline refresh =====")
        cli("baseline", "refresh", "--scenario", name, "--compile-time", "cold")
        cli("baseline", "refresh", "--scenario", name)  # and warm: each cache state's entry
        new_path = bl.DEFAULT_DIR / bl.file_name(factors)
        print(f"\n===== {name}: baseline diff {old_path.name} {new_path.name} =====")
        cli("baseline", "diff", str(old_path), str(new_path))
        summary.append(
            [
                name,
                bl.load(old_path).factors.torch,
                torch.__version__,
                check.returncode,
                ", ".join(moved) or "nothing",
                round(time.monotonic() - t0, 1),
            ]
        )
    print(
        "\n"
        + tabulate(summary, headers=["scenario", "baseline torch", "running torch", "check exit", "moved", "wall s"])
    )
    print("\nwhat the release did to the compiled program's users (rank 0; baseline -> running, verdict):")
    print(tabulate(quality, headers=["scenario", *QUALITY_COLUMNS]))
    print(f"rehearsal wall time {time.monotonic() - started:.1f}s (venv build not included); reports: {out}")
    html = args.html or out / "upgrade_rehearsal.html"
    headers = ["scenario", "baseline torch", "running torch", "check exit", "moved", "wall s"]
    page = collection(
        kind="upgrade rehearsal",
        subject=args.scenarios,
        versions=f"torch {args.from_torch} -> {torch.__version__}",
        summary=Difference(
            title="check against the old baselines, per scenario",
            columns=tuple(headers),
            rows=tuple(tuple(str(v) for v in row) for row in summary),
        ),
        parts=parts,
        passed=all(row[3] == 0 for row in summary),
        data={"summary": [dict(zip(headers, row, strict=True)) for row in summary], "reports": str(out)},
    )
    write_text(html, render.html(page, html))
    print(f"page: {html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
