"""The walk of one `check` through the harness's files: which files `run_and_judge` passes through, in order, and
how often it enters again a file it had left. Run it before and after a restructuring.

    python benchmarks/walk.py [--scenario tp2] [--baselines baselines] [--depth N]

The parent process runs `compile-guard check --scenario S` (launched: the ranks are child processes, not
traced) and is traced (sys.setprofile) from the moment it enters `run_and_judge` until that returns. A call
*enters* a file when the caller is in another compile_guard file; the
walk lists the files in the order they are first entered; a *return to a file it left* is every entry of a
file after its first. Calls deeper than `--depth` frames below `run_and_judge` (default 3: the steps and
what they call directly) are not counted: the launcher's and the page's own helpers are not the flow. The
typed values of contracts/ are listed, and their methods' entries counted apart (reading a job's name is not
a step of the walk).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PACKAGE = str(REPO / "compile_guard") + "/"
DATA = "contracts/"  # the typed values that cross the boundary: reading one is not a step of the walk


def _short(filename: str) -> str | None:
    return filename[len(PACKAGE) :] if filename.startswith(PACKAGE) else None


def trace(call, depth: int) -> tuple[list[str], Counter]:
    """(files in the order first entered, entries per file) of `call()`'s walk below `run_and_judge`, `depth`
    frames deep."""
    order: list[str] = []
    entries: Counter = Counter()
    stack: list[str | None] = []
    base: list[int] = []  # the stack height at which run_and_judge runs (empty: not in it)

    def profile(frame, event, arg):
        if event == "call":
            here = _short(frame.f_code.co_filename)
            caller = stack[-1] if stack else None
            stack.append(here)
            if not base and here == "flow/check_flow.py" and frame.f_code.co_name == "run_and_judge":
                base.append(len(stack))
            if base and here is not None and here != caller and len(stack) - base[0] <= depth:
                entries[here] += 1
                if here not in order:
                    order.append(here)
        elif event == "return" and stack:
            if base and len(stack) == base[0]:
                base.clear()
            stack.pop()

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return order, entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="tp2")
    parser.add_argument("--baselines", type=Path, default=REPO / "baselines")
    parser.add_argument("--depth", type=int, default=3)
    args = parser.parse_args()
    from compile_guard.cli import main as cli

    argv = ["check", "--scenario", args.scenario, "--baselines", str(args.baselines)]
    codes: list[int] = []
    order, entries = trace(lambda: codes.append(cli(argv)), args.depth)
    print(f"check {args.scenario}: exit {codes[0]}")
    print(f"{'#':>3}  {'file':<36}{'entries':>8}")
    for i, name in enumerate(order, 1):
        print(f"{i:>3}  {name:<36}{entries[name]:>8}")
    again = sum(n - 1 for n in entries.values())
    steps = sum(n - 1 for name, n in entries.items() if not name.startswith(DATA))
    print(
        f"\nfiles: {len(order)}; returns to a file it left: {again}; not counting the typed values' own methods"
        f" ({DATA}: a property read, a to_json): {steps}"
    )


if __name__ == "__main__":
    main()
