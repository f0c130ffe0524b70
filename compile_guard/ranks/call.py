"""Run one function on every rank, for the pytest plugin: `func(ctx) -> JSON-able`.

    python -m compile_guard.ranks.call --func pkg.mod:function --out DIR   # on every rank

Each rank joins (explicit timeout), builds a TP group over the whole world, calls the
function with a `TargetContext` and writes its return value to `DIR/result-rank{r}.json`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from compile_guard import named
from compile_guard.integrations.target import TargetContext
from engine.atomic_json import write_json
from engine.config import DistConfig
from engine.layout import ParallelLayout, RankContext
from engine.rank_process import leave, rank_main


def run(ctx: RankContext, func_spec: str) -> dict[str, Any]:
    func = named.callable_at(func_spec, what="rank_runner's function", example="tests.rank_functions:allreduce_once")
    layout = ParallelLayout(ctx, tp=ctx.world_size)
    value = func(
        TargetContext(rank=ctx.rank, world_size=ctx.world_size, tp_group=layout.group("tp"), device=ctx.device)
    )
    return {"rank": ctx.rank, "value": value}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--func", required=True, help="pkg.module:function")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)

    def write(result: dict[str, Any]) -> None:
        write_json(Path(args.out) / f"result-rank{result['rank']}.json", result["value"])

    return rank_main(DistConfig(timeout_s=args.timeout_s), lambda ctx: run(ctx, args.func), write)


if __name__ == "__main__":
    leave(main())
