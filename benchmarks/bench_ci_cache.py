"""A cold CI runner vs one that restored inductor's cache: `check --scenario tp2`, side by side.

    python benchmarks/bench_ci_cache.py [--repeats 2]

Each repeat: a cold run into an empty TORCHINDUCTOR_CACHE_DIR (what a fresh runner does), the
cache directory then copied whole to a new place (what actions/cache saves and restores), and
a run against the copy. Median wall time of each, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent


def check(cache: Path) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "compile_guard", "check", "--scenario", "tp2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)},
    )
    if proc.returncode != 0:
        raise SystemExit(f"check failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_ci_cache_"))
    cold, restored = [], []
    for i in range(args.repeats):
        cold.append(check(root / f"cold{i}"))
        shutil.copytree(root / f"cold{i}", root / f"restored{i}")  # save, then restore on another runner
        restored.append(check(root / f"restored{i}"))
    c, r = statistics.median(cold), statistics.median(restored)
    print(
        tabulate(
            [
                ["cold runner (empty cache)", round(c, 1)],
                ["restored cache", round(r, 1)],
                ["restored / cold", f"{r / c:.2f}"],
            ],
            headers=["check --scenario tp2", "median wall s"],
        )
    )
    print(f"\n{args.repeats} repeats; caches under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
