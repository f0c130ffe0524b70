"""The mechanics of the in-place run mode (compile_guard.launch.modes.InPlace): a launcher (torchrun, srun
through its wrapper) already made this process one rank of N, so nothing is launched.

`check` and `baseline refresh`: every rank runs the program's rank body itself (`run_body`), the reports are
gathered over the job's own world group, every rank judges the same data and so exits with
the same code; only rank 0 prints and writes files (the mode's Output). A run that fails is *settled* (`settle`):
once a rank has left the group, the first rank whose failure is a cause of its own posts it on
torchrun's store (compare-and-set), every rank reads the standing cause and decides with
`verdict.decide` over it — so every rank of a failed run exits the same code too. A rank
stopped from a thread (a watcher's verdict, the watchdog) settles the same way on its way out
(the rank's RankContext.exit_status, given to rank_main). Where the store does not outlive rank 0 (a launcher without
torchrun's agent store), a rank decides over its own code alone.

`matrix` and `overlap` supervise rank processes of their own by design (their faults kill
ranks): rank 0 runs them, the other ranks wait for its exit code on the launcher's store and
exit with it.
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any, Callable

from compile_guard import verdict
from compile_guard.verdict import Cli
from engine import knobs

if TYPE_CHECKING:
    from engine.config import DistConfig
    from engine.layout import RankContext

log = logging.getLogger(__name__)
SETTLE_MARGIN_S = 5.0  # past the group timeout: a peer blocked in a collective has failed by itself by then


def _launcher_store(timeout_s: float) -> Any | None:
    """A client of the store torchrun's agent hosts (it outlives every rank); None where there is none."""
    if not knobs.read("TORCHELASTIC_USE_AGENT_STORE") or knobs.read("MASTER_PORT") is None:
        return None
    from torch.distributed import TCPStore

    return TCPStore(
        knobs.read("MASTER_ADDR"), knobs.read("MASTER_PORT"), None, False, datetime.timedelta(seconds=timeout_s)
    )


def settle(rank_code: int, *, window_s: float) -> verdict.Verdict:
    """The job's one verdict, the same on every rank. A rank whose failure is a cause of its own (not a lost peer)
    posts it unless another rank's cause stands already (first writer wins, compare-and-set on torchrun's store),
    and exits at once — so its peers, blocked in a collective, see it leave and fail within a second; a rank that
    only lost a peer waits up to `window_s` for the standing cause. Every rank decides over the standing cause
    alone; this rank's own code where there is none (no agent store, or no cause came)."""
    rank = knobs.read("RANK")
    own = verdict.RankOutcome(rank=rank, code=rank_code)
    try:
        store = _launcher_store(window_s)
        if store is None:
            return verdict.decide([own])
        key = f"compile_guard/verdict/{knobs.read('TORCHELASTIC_RESTART_COUNT')}"
        if rank_code not in verdict.CONSEQUENCES:
            standing = store.compare_set(key, "", f"{rank}:{rank_code}").decode()
        else:
            try:
                store.wait([key], datetime.timedelta(seconds=window_s))
                standing = store.get(key).decode()
            except Exception:  # no rank posted a cause (it died without a word): this rank's own view
                return verdict.decide([own])
        by, _, code = standing.partition(":")
        decided = verdict.decide([verdict.RankOutcome(rank=int(by), code=int(code))])
    except Exception as exc:  # the store went away (the agent is tearing the job down): this rank alone
        log.warning("settling the exit code with the peers failed (%s): this rank decides alone", exc)
        return verdict.decide([own])
    log.warning(
        "settled: this rank's code %s, the job's cause rank %s code %s -> exit %s (%s)",
        rank_code,
        by,
        code,
        decided.code,
        decided.label,
    )
    return decided


def run_body(config: DistConfig, body: Callable[[RankContext], str]) -> tuple[list[str] | None, int]:
    """Run a rank program's `body` (its report's JSON text) as this rank of the launcher's job; gather every
    rank's report over the job's world group. (the reports in rank order, 0), or (None, this rank's CLI exit code,
    settled with its peers); a thread that ends the rank settles the same way (rank_main's exit_status)."""
    from engine.collectives import all_gather_json
    from engine.layout import ParallelLayout
    from engine.rank_process import rank_main

    window_s = config.timeout_s + SETTLE_MARGIN_S
    gathered: list[list[str]] = []

    def gathering(ctx: RankContext) -> list[str]:
        report = body(ctx)
        world = ParallelLayout(ctx, tp=ctx.world_size).group("world")  # the job's ranks, with our timeout
        return all_gather_json(report, group=world, device=ctx.device)

    code = rank_main(config, gathering, gathered.append, exit_status=lambda c: settle(c, window_s=window_s).code)
    if code != 0:
        return None, settle(code, window_s=window_s).code
    return gathered[0], Cli.OK


def leader_runs(name: str, command: Callable[[], int], *, timeout_s: float) -> int:
    """rank 0 runs `command`; every rank returns its exit code (the others read it from the store)."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    key = f"compile_guard/{name}/exit_code"
    if rank == 0:
        code = int(Cli.ENGINE)
        try:
            code = command()
        finally:
            store.set(key, str(int(code)))  # the others exit with it, or with 3 if rank 0 crashed
            # Where rank 0 hosts the store (not torchrun's agent), it must outlive every read.
            store.wait([f"{key}/read{r}" for r in range(1, world)], datetime.timedelta(seconds=60))
        return code
    store.wait([key], timeout)
    code = int(store.get(key).decode())
    store.set(f"{key}/read{rank}", "1")
    return code
