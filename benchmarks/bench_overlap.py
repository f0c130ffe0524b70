"""PP0 overlap figures, repeated: is D=2 stable, does D=1 collapse, is the bug always caught?

    python benchmarks/bench_overlap.py [--repeats 3] [--chunks 24]

Each repeat runs D=1, D=2 and the serialised schedule (fresh rank pairs, stages pinned to
one thread each) and prints OverlapScore, period / max(stage0, stage1), queue bounds and
the classifier's verdict per run, then the worst case over repeats.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tabulate import tabulate

from compile_guard.commands.overlap import run_pp0
from engine.topology.overlap_metrics import classify


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=24)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_overlap_"))
    rows, d2_scores, d2_ratios, correct = [], [], [], 0
    for i in range(args.repeats):
        for name, depth, schedule, expected in (
            ("D=1", 1, "healthy", "serialized"),
            ("D=2", 2, "healthy", "healthy"),
            ("serial", 2, "serial", "serialized"),
        ):
            run = run_pp0(root / f"{name}-{i}", depth=depth, chunks=args.chunks, schedule=schedule)
            s = run["summary"]
            label, _ = classify(s)
            correct += label == expected
            if name == "D=2":
                d2_scores.append(s["overlap_score"])
                d2_ratios.append(s["period_over_max_stage"])
            rows.append(
                [
                    i,
                    name,
                    round(s["overlap_score"], 2),
                    round(s["period_over_max_stage"], 3),
                    round(s["median"]["t_mesh_idle_ms"], 2),
                    f"{run['max_depth']['in_flight']}/{depth}",
                    label,
                ]
            )
    print(
        tabulate(
            rows,
            headers=[
                "repeat",
                "run",
                "OverlapScore",
                "period/max(stage)",
                "mesh idle ms",
                "max in-flight / D",
                "classified",
            ],
        )
    )
    print(
        f"\nD=2 worst: OverlapScore {min(d2_scores):.2f} (target >= 0.6), period/max(stage) {max(d2_ratios):.3f}"
        f" (target <= 1.1); classifier correct {correct}/{3 * args.repeats}; logs: {root}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
