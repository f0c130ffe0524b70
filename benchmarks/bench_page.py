"""The reviewer's pages of real runs, measured: size, the time to render each from its JSON, and what a headless
chromium finds in it (every section visible, every plot drawn, no console error).

    python benchmarks/bench_page.py [--out DIR] [--page FILE ...]

Runs `check` of the default scenario (what `make run` runs) and `matrix --rows C-03,NU-01`, each with `--html`;
`--page` adds pages written elsewhere (the upgrade rehearsal's, say). Needs playwright (the test extras) and
Debian's chromium (`apt-get install -y chromium`). tests/test_page.py opens pages with `open_in_browser`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from compile_guard.page import render
from compile_guard.page.check_page import check_page
from compile_guard.page.pages import matrix_page

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# what a headless chromium needs on a machine with no network, as root
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def sections_of(path: Path) -> list[str]:
    """The ids of every section a page holds, read off the file (its parts' included)."""
    return re.findall(r'<section id="([^"]+)"', path.read_text())


def open_in_browser(pw, path: Path) -> dict:
    """Open `path` headless: console errors, whether each section is visible, each plot's box, the load time and
    the embedded JSON; a full-page screenshot is written beside it (.png)."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        started = time.monotonic()
        tab.goto(path.resolve().as_uri())
        loaded_s = time.monotonic() - started
        seen = {}
        for section in sections_of(path):
            where = tab.locator(f"#{section}")
            box = where.bounding_box()
            seen[section] = box is not None and box["height"] > 0 and where.is_visible()
        plots = tab.locator("section.plot svg")
        boxes = [plots.nth(i).bounding_box() for i in range(plots.count())]
        tab.screenshot(path=str(path.with_suffix(".png")), full_page=True)
        data = json.loads(tab.locator("#report-data").text_content())
        return {"errors": errors, "seen": seen, "plots": boxes, "loaded_s": loaded_s, "data": data}
    finally:
        browser.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compile_guard", *args], cwd=REPO, capture_output=True, text=True, timeout=1200
    )


def _timed(build) -> tuple[str, float]:
    started = time.perf_counter()
    text = build()
    return text, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where the pages go (default: a temp dir)")
    parser.add_argument("--page", type=Path, action="append", default=[], help="another page to open")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_page_"))
    out.mkdir(parents=True, exist_ok=True)
    rows, pages = [], []
    check = _cli("check", "--json", str(out / "check.json"), "--html", str(out / "check.html"))
    (out / "check.txt").write_text(check.stdout)  # what `make run` printed
    data = json.loads((out / "check.json").read_text())
    _, render_s = _timed(lambda: render.html(check_page(data, exit_code=check.returncode, text=check.stdout)))
    pages.append(("check (make run)", out / "check.html", check.returncode, render_s))
    logs = out / "matrix-logs"
    matrix = _cli(
        "matrix", "--rows", "C-03,NU-01", "--log-dir", str(logs), "--json", str(out / "matrix.json"), "--html",
        str(out / "matrix.html"),
    )  # fmt: skip
    results = json.loads((out / "matrix.json").read_text())
    _, render_s = _timed(lambda: render.html(matrix_page(results["rows"], wall_s=results["wall_s"])))
    pages.append(("matrix C-03, NU-01", out / "matrix.html", matrix.returncode, render_s))
    pages += [(p.name, p, None, None) for p in args.page]
    with sync_playwright() as pw:
        for name, path, code, render_s in pages:
            seen = open_in_browser(pw, path)
            visible = sum(seen["seen"].values())
            rows.append(
                [
                    name,
                    code,
                    f"{path.stat().st_size / 1024:.0f}",
                    "-" if render_s is None else f"{render_s * 1e3:.0f}",
                    f"{seen['loaded_s'] * 1e3:.0f}",
                    f"{visible}/{len(seen['seen'])}",
                    len(seen["plots"]),
                    len(seen["errors"]),
                    ", ".join(s for s in seen["seen"] if "-" not in s or s.startswith("plot-"))[:80],
                ]
            )
    print(
        tabulate(
            rows,
            headers=[
                "page",
                "exit",
                "KB",
                "render ms",
                "load ms",
                "sections visible",
                "plots",
                "console errors",
                "top sections",
            ],
        )  # fmt: skip
    )
    print(f"pages and screenshots: {out}")
    return 0 if all(r[7] == 0 and r[5].split("/")[0] == r[5].split("/")[1] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
