"""Every torch the package admits, rehearsed: one venv per release, the same commands in each, one table.

    python benchmarks/version_matrix.py [--releases 2.6.0,2.10.0,2.15.0] [--keep] [--venvs DIR] [--suite]
                                        [--out DIR]

Opt-in, never in `make test`: each release other than the pinned one is a CUDA build from PyPI (5-7 GB in
its venv; it runs on the CPU). Per release: the venv (reused with --keep, else built fresh and removed after:
install time and size reported), then `check` of the built-in scenarios against the committed baselines,
`baseline refresh` + `check --strict` of every built-in scenario, the operator matrix, and the agreement,
compat and verdict tests (`--suite`: the whole suite). Each cell is the exit code and wall time; "vs
committed" lists the metrics whose verdict against the committed baselines is not `ok` (a version change is
stated, never a failure). Each release's refreshed baselines and every command's whole output
(commands.log) are kept under --out/<release>/; a last table diffs each scenario between consecutive
releases (what the upgrade moved; break reasons a release only renamed compared as one), and one HTML page holds it
all (--html: the table, then each pair of releases' baseline diff page).
On this box torch > 2.14.1 needs the pip cap lifted first (`rm -r /etc/xdg/pip`, see the env notes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

# imported here, not where the diffs are taken: a Python without the package fails now, not after an hour of
# rehearsals (run it with the project's venv, as `make version-matrix` does)
from compile_guard.health import baseline as bl
from compile_guard.health import policy
from compile_guard.page import render
from compile_guard.page.model import Difference, Page
from compile_guard.page.pages import collection, diff_page
from compile_guard.quality import rules
from engine.atomic_json import write_text

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RELEASES = "2.6.0,2.10.0,2.15.0"  # the floor, a middle release, the newest
SCENARIOS = ("tp2-aot", "pp1")  # checked against the committed baselines
REFRESHED = ("tp2", "tp2-aot", "pp1")  # refreshed per release, then diffed release to release


_LOGS: list[Path] = []  # where each rehearsed command's whole output goes (set per release in main)


def _run(argv: list[str], *, timeout_s: float, cwd: Path = REPO) -> tuple[int, float, str]:
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        code, out = 124, f"timed out after {timeout_s}s"
    if _LOGS:
        with (_LOGS[-1] / "commands.log").open("a") as log:  # a failed cell's output, to read afterwards
            log.write(f"$ {' '.join(argv)}\n-> exit {code}\n{out}\n")
    return code, time.monotonic() - started, out


def build(release: str, venv: Path) -> dict[str, object]:
    """The release's venv (reused when it already holds that torch): install time and size."""
    python = venv / "bin" / "python"
    if python.exists():
        code, _, out = _run([str(python), "-c", "import torch, compile_guard; print(torch.__version__)"], timeout_s=120)
        if code == 0 and out.strip().startswith(release):
            return {"install_s": None, "size": _size(venv), "reused": True}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for what in ([f"torch=={release}"], ["-e", f"{REPO}[test]"]):
        code, _, out = _run([str(python), "-m", "pip", "install", "-q", *what], timeout_s=3600)
        if code != 0:  # the release's row says so and the next release still runs
            last = (out.strip().splitlines() or ["?"])[-1][:120]
            config = subprocess.run([str(python), "-m", "pip", "config", "list"], capture_output=True, text=True)
            caps = [line for line in config.stdout.splitlines() if ".constraint=" in line]  # a cap on torch?
            hint = f"; pip's config applies a constraints file ({caps[0]}): lift its cap on torch" if caps else ""
            return {"install_s": None, "size": _size(venv), "reused": False, "failed": f"{last}{hint}"}
    return {"install_s": round(time.monotonic() - started), "size": _size(venv), "reused": False}


def _size(path: Path) -> str:
    return subprocess.run(["du", "-sh", str(path.resolve())], capture_output=True, text=True).stdout.split()[0]


def _changes(json_path: Path) -> str:
    if not json_path.exists():
        return "-"
    data = json.loads(json_path.read_text())
    moved = [
        f"{r['metric']} {r['baseline']}->{r['per_rank'][0]}"
        for r in data.get("rows", [])
        if r["verdict"] != "ok" and r["metric"] != "effective_backend"
    ]
    return "; ".join(moved)[:160] or "none"


def rehearse(python: Path, *, suite: bool, work: Path, baselines: Path) -> list[list[object]]:
    rows = []
    for scenario in SCENARIOS:
        out = work / f"check-{scenario}.json"
        code, wall, _ = _run(
            [str(python), "-m", "compile_guard", "check", "--scenario", scenario, "--json", str(out)], timeout_s=900
        )
        rows.append([f"check {scenario}", code, round(wall, 1), _changes(out)])
    for scenario in REFRESHED:
        code, wall, _ = _run(
            [
                str(python),
                "-m",
                "compile_guard",
                "baseline",
                "refresh",
                "--scenario",
                scenario,
                "--baselines",
                str(baselines),
            ],
            timeout_s=900,
        )
        code1, wall1, _ = _run(
            [
                str(python),
                "-m",
                "compile_guard",
                "baseline",
                "refresh",
                "--scenario",
                scenario,
                "--baselines",
                str(baselines),
                "--compile-time",
                "cold",
            ],
            timeout_s=900,
        )
        code2, wall2, _ = _run(
            [
                str(python),
                "-m",
                "compile_guard",
                "check",
                "--scenario",
                scenario,
                "--strict",
                "--baselines",
                str(baselines),
            ],
            timeout_s=900,
        )
        code, wall = max(code, code1), wall + wall1
        rows.append([f"refresh + check --strict {scenario}", f"{code}, {code2}", round(wall + wall2, 1), "-"])
    code, wall, out = _run([str(python), "-m", "compile_guard", "matrix"], timeout_s=1800)
    summary = next((line for line in out.splitlines() if "rows passed" in line), out.strip().splitlines()[-1:])
    rows.append(["matrix", code, round(wall, 1), str(summary).split(";")[0]])
    tests = ["tests"] if suite else ["tests/test_agreement.py", "tests/test_compat.py", "tests/test_verdict.py"]
    code, wall, out = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], timeout_s=3600)
    rows.append([f"pytest {' '.join(tests)}", code, round(wall, 1), (out.strip().splitlines() or ["?"])[-1][:160]])
    return rows


def upgrade_diffs(out: Path, releases: list[str], pages: list[Page] | None = None) -> list[list[str]]:
    """Per scenario, each consecutive pair of releases: the metrics that moved (`baseline diff`'s comparison:
    break reasons a release only renamed compared as one). `pages`: each pair's diff page is appended."""
    rows = []
    for scenario in REFRESHED:
        for a, b in zip(releases, releases[1:], strict=False):
            found = [next(iter(sorted((out / r).glob(f"{scenario}__torch-*.json"))), None) for r in (a, b)]
            if None in found:
                rows.append([scenario, f"{a} -> {b}", "a baseline is missing (its refresh failed)"])
                continue
            old, new = bl.load(found[0]), bl.load(found[1])
            metrics, renamed = policy.across_releases(old.metrics, old.break_sites, [new.metrics], [new.break_sites])
            moved = [
                f"{r.metric} {json.dumps(r.baseline)[:40]} -> {json.dumps(r.per_rank[0])[:40]}"
                for r in policy.compare(old.metrics, metrics)
                if r.verdict != policy.OK and r.metric != "effective_backend"
            ]
            quality = rules.between(old.quality, new.quality)
            rows.append([scenario, f"{a} -> {b}", "; ".join(moved + renamed) or "nothing", "; ".join(quality)])
            if pages is not None:
                sides = [
                    {"path": str(p), "factors": x.factors.as_dict(), "quality": x.quality}
                    for p, x in zip(found, (old, new), strict=True)
                ]
                compared = [dataclasses.asdict(r) for r in policy.compare(old.metrics, metrics)]
                pages.append(diff_page(*sides, compared, quality, text="\n".join(renamed)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", default=DEFAULT_RELEASES, help=f"comma-separated (default {DEFAULT_RELEASES})")
    parser.add_argument("--venvs", type=Path, default=REPO / ".venv-torch", help="one venv per release in here")
    parser.add_argument("--keep", action="store_true", help="reuse and keep the venvs (else built fresh, removed)")
    parser.add_argument("--suite", action="store_true", help="run the whole test suite, not its agreement part")
    parser.add_argument("--html", type=Path, default=None, help="the matrix's page (default: in --out)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / ".venv-torch" / "baselines",
        help="each release's refreshed baselines, kept for the release-to-release diffs",
    )
    args = parser.parse_args()
    table, builds = [], []
    releases = [r.strip() for r in args.releases.split(",") if r.strip()]
    for release in releases:
        venv = args.venvs / release
        if not args.keep and venv.exists():
            shutil.rmtree(venv)
        (args.out / release).mkdir(parents=True, exist_ok=True)
        _LOGS.append(args.out / release)
        built = build(release, venv)
        builds.append([release, built["install_s"] if not built["reused"] else "reused", built["size"]])
        if "failed" in built:
            table.append(
                [
                    release,
                    f"pip install (whole output: {args.out / release / 'commands.log'})",
                    "failed",
                    "-",
                    built["failed"],
                ]
            )
        else:
            with tempfile.TemporaryDirectory(prefix=f"version_matrix_{release}_") as work:
                for row in rehearse(
                    venv / "bin" / "python", suite=args.suite, work=Path(work), baselines=args.out / release
                ):
                    table.append([release, *row])
        if not args.keep:
            shutil.rmtree(venv)
        print(
            tabulate(table, headers=["torch", "command", "exit", "wall s", "vs committed baselines / result"]),
            flush=True,
        )
    print(tabulate(builds, headers=["torch", "install s", "venv size"]))
    pages: list[Page] = []
    print(
        tabulate(
            upgrade_diffs(args.out, releases, pages),
            headers=["scenario", "upgrade", "what moved (baseline diff)", "accuracy, speed, compile time (rank 0)"],
        )
    )
    passed = all(str(r[2]) in ("0", "0, 0") for r in table)
    headers = ("torch", "command", "exit", "wall s", "vs committed baselines / result")
    page = collection(
        kind="version matrix",
        subject=", ".join(releases),
        versions=f"torch {releases[0]} ... {releases[-1]}",
        summary=Difference(
            title="each release: the same commands", columns=headers, rows=tuple(tuple(map(str, r)) for r in table)
        ),
        parts=pages,
        passed=passed,
        data={"table": [dict(zip(headers, r, strict=True)) for r in table], "releases": releases},
    )
    html = args.html or args.out / "version_matrix.html"
    write_text(html, render.html(page, html))
    print(f"page: {html}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
