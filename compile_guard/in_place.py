"""Commands run in place when a launcher (torchrun, srun through its wrapper) already made this
process one rank of N: no nested launch.

`check` and `baseline refresh`: every rank runs the check's rank body itself, the reports are
gathered over the job's own world group, every rank judges the same data and so exits with
the same code; only rank 0 prints and writes files. `matrix` and `overlap` supervise rank
processes of their own by design (their faults kill ranks): rank 0 runs them, the other ranks
wait for its exit code on the launcher's store and exit with it.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Callable

from compile_guard.report import ASYMMETRY_CODES, EXIT_ENGINE, EXIT_FAIL, EXIT_STALL, EXIT_USAGE
from engine import knobs
from engine.errors import Stalled
from engine.runspec import RunSpec


def active() -> bool:
    """True when a launcher already set RANK and WORLD_SIZE for this process."""
    return knobs.under_torchrun()


def is_leader() -> bool:
    """Whether this process speaks for the job: rank 0 in place, always when self-launching."""
    return knobs.read("RANK") in (None, 0)


def cli_code(rank_code: int) -> int:
    """A rank program's exit code as the CLI's: 1 the ranks differ, 2 input, 4 a stall, 3 anything else."""
    if rank_code == 0:
        return 0
    if rank_code == Stalled.exit_code:
        return EXIT_STALL
    return EXIT_FAIL if rank_code in ASYMMETRY_CODES else EXIT_USAGE if rank_code == EXIT_USAGE else EXIT_ENGINE


def probe_all(spec: RunSpec, *, dump_dir: Path | None) -> tuple[list[dict[str, Any]] | None, int]:
    """(every rank's probe report in rank order, or None; this rank's exit code as a rank program)."""
    from compile_guard.ranks.check import probe_rank  # the rank side: torch, the engine
    from engine.collectives import all_gather_json
    from engine.layout import ParallelLayout
    from engine.rank_process import rank_main

    gathered: list[list[dict[str, Any]]] = []

    def body(ctx: Any) -> dict[str, Any]:
        report = probe_rank(ctx, spec, dump_dir)
        world = ParallelLayout(ctx, tp=ctx.world_size).group("world")  # the job's ranks, with our timeout
        return {"reports": all_gather_json(report, group=world, device=ctx.device)}

    code = rank_main(spec.dist_config(), body, lambda result: gathered.append(result["reports"]))
    return (gathered[0] if gathered else None), code


def leader_runs(name: str, command: Callable[[], int], *, timeout_s: float) -> int:
    """rank 0 runs `command`; every rank returns its exit code (the others read it from the store)."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    key = f"compile_guard/{name}/exit_code"
    if rank == 0:
        code = EXIT_ENGINE
        try:
            code = command()
        finally:
            store.set(key, str(code))  # the others exit with it, or with 3 if rank 0 crashed
            # Where rank 0 hosts the store (not torchrun's agent), it must outlive every read.
            store.wait([f"{key}/read{r}" for r in range(1, world)], datetime.timedelta(seconds=60))
        return code
    store.wait([key], timeout)
    code = int(store.get(key).decode())
    store.set(f"{key}/read{rank}", "1")
    return code
