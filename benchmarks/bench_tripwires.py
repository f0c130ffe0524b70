"""Tripwire overhead: input digest + shard fingerprints vs the generator calls they guard.

    python benchmarks/bench_tripwires.py [--chunks 24] [--repeats 2]

TP=2, gloo, CPU, eager, serving shape (4 layers). Two views, measured in one run:
  1. in-run accounting: time inside digest / periodic fingerprint code divided by time
     inside generator calls, at the default sampling (digest every chunk, fingerprints
     every COMPILE_GUARD_FINGERPRINT_EVERY calls);
  2. end to end: wall time per generator call with tripwires on (defaults) vs off
     (digest off, fingerprints only at init), runs interleaved to share the noise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tabulate import tabulate

from compile_guard.launch.launcher import LaunchSpec, launch, python_module_argv
from engine import events, knobs
from engine.topology import tp

OFF = {"COMPILE_GUARD_INPUT_DIGEST": "0", "COMPILE_GUARD_FINGERPRINT_EVERY": "1000000"}


def run(chunks: int, env: dict[str, str], log_dir: Path) -> dict:
    result = launch(
        LaunchSpec(
            argv=python_module_argv(tp, "--chunks", str(chunks), "--recompute-every", "0"),
            nprocs=2,
            deadline_s=600,
            log_dir=log_dir,
            env=env,
        )
    )
    if not result.ok:
        raise SystemExit(f"run failed:\n{result.summary()}")
    done = [e for e in events.parse(result.ranks[0].log_path.read_text()) if e["event"] == "run_done"]
    return done[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_tripwires_"))
    on, off = [], []
    for i in range(args.repeats):
        on.append(run(args.chunks, {}, root / f"on{i}"))
        off.append(run(args.chunks, OFF, root / f"off{i}"))

    def per_call_ms(s):
        return s["wall_s"] / s["generator_calls"] * 1e3

    calls = on[0]["generator_calls"]
    gen_ms = statistics.median(s["generator_s"] / s["generator_calls"] * 1e3 for s in on)
    digest_ms = statistics.median(s["digest_s"] / s["generator_calls"] * 1e3 for s in on)
    fp_ms = statistics.median(s["fingerprint_s"] / s["generator_calls"] * 1e3 for s in on)
    wall_on, wall_off = statistics.median(map(per_call_ms, on)), statistics.median(map(per_call_ms, off))
    print(
        tabulate(
            [
                ["generator call", round(gen_ms, 3), "100%"],
                ["input digest (per call)", round(digest_ms, 4), f"{digest_ms / gen_ms:.2%}"],
                ["fingerprints, periodic (per call)", round(fp_ms, 4), f"{fp_ms / gen_ms:.2%}"],
                ["tripwires total", round(digest_ms + fp_ms, 4), f"{(digest_ms + fp_ms) / gen_ms:.2%}"],
            ],
            headers=["in-run accounting (rank0)", "ms", "of a generator call"],
        )
    )
    print()
    print(
        tabulate(
            [
                ["tripwires on (defaults)", round(wall_on, 3)],
                ["tripwires off", round(wall_off, 3)],
                ["on / off", f"{wall_on / wall_off:.3f}"],
            ],
            headers=["end to end", "wall ms per generator call"],
        )
    )
    every = knobs.read("COMPILE_GUARD_FINGERPRINT_EVERY", {})
    print(
        f"\n{calls} generator calls per run, {args.repeats} runs each, fingerprints every {every} calls; logs: {root}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
