"""An engine topology as one rank of a harness run: the matrix rows and the overlap command.

    python -m compile_guard.ranks.serve --spec '<RunSpec JSON>' --out DIR     # on every rank

The spec says which topology (tp, pp0, pp1) and how it runs; the matrix's fault injector
(COMPILE_GUARD_TEST_* knobs, parity-checked) is handed to the engine as its hooks. A run
ends with a `run_done` event in the rank's log; PP0 also writes `pp0-rank{r}.json` into
--out for the overlap figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from compile_guard.matrix.faults import FaultInjector
from engine import events
from engine.layout import RankContext
from engine.rank_process import leave, rank_main
from engine.runspec import RunSpec
from engine.topology import pp0, pp1, tp

TOPOLOGIES = {"tp": tp.run, "pp0": pp0.run, "pp1": pp1.run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the run spec, canonical JSON (engine.runspec.RunSpec)")
    parser.add_argument("--out", type=Path, default=None, help="directory for pp0-rank{r}.json (topology pp0)")
    args = parser.parse_args(argv)
    spec = RunSpec.from_json(args.spec)
    run = TOPOLOGIES[spec.topology]

    def body(ctx: RankContext) -> dict[str, Any]:
        return run(ctx, spec, FaultInjector.from_knobs())

    def done(summary: dict[str, Any]) -> None:
        if spec.topology == "pp0" and args.out is not None:
            pp0.write_result(args.out, summary)
        else:
            events.emit("run_done", **summary)

    return rank_main(spec.dist_config(), body, done)


if __name__ == "__main__":
    leave(main())
