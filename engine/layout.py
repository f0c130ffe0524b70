"""The process groups of one job, built once, in one object.

`ParallelLayout` builds the TP groups (and the PP groups when pp > 1), checks
`tp * pp == world_size`, and hands groups out by axis. Nothing here is global: callers pass
`layout.group("tp")` to whatever needs a group. Joining the job itself is `engine.lifecycle`.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from engine import events
from engine.errors import ConfigError, WrongGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RankContext:
    rank: int  # global rank
    world_size: int  # ranks in the job
    local_rank: int  # rank on this host
    device: torch.device  # where this rank's tensors live
    backend: str  # resolved collective backend (gloo / nccl)
    timeout_s: float  # timeout every group of this job was created with
    # this process's exit status for a rank code when a thread ends it (engine.failure.abort): the code itself for a
    # rank program; the CLI's code, settled with the peers, for a rank body run in place (rank_process.rank_main)
    exit_status: Callable[[int], int] = int


class ParallelLayout:
    """Builds and names the process groups of one job.

    Ranks are laid out tp-major: the TP group of rank r is the `tp` consecutive ranks that
    contain r. Every rank creates every group, in the same order, as new_group requires.
    """

    def __init__(self, ctx: RankContext, *, tp: int, pp: int = 1, driver_out_of_mesh: bool = False) -> None:
        # driver_out_of_mesh (PP1): rank 0 drives from outside; ranks 1..tp form the mesh.
        offset = 1 if driver_out_of_mesh else 0
        if tp * pp + offset != ctx.world_size:
            driver = " + 1 driver" if offset else ""
            raise ConfigError(
                f"tp({tp}) * pp({pp}){driver} = {tp * pp + offset} does not match world_size({ctx.world_size});"
                f" launch {tp * pp + offset} ranks or pick tp/pp to match {ctx.world_size}"
            )
        self.ctx = ctx
        self.tp = tp
        self.pp = pp
        # names in logs: the TP group of a PP1 mesh is the mesh's group
        self.group_names = {"world": "world_pg", "tp": "mesh_pg" if driver_out_of_mesh else "tp_pg"}
        timeout = datetime.timedelta(seconds=ctx.timeout_s)
        self._groups: dict[str, dist.ProcessGroup] = {}
        self._ranks: dict[str, tuple[int, ...]] = {}
        world = tuple(range(ctx.world_size))
        self._groups["world"], self._ranks["world"] = dist.new_group(list(world), timeout=timeout), world
        for stage in range(pp):
            ranks = tuple(range(offset + stage * tp, offset + (stage + 1) * tp))
            group = dist.new_group(list(ranks), timeout=timeout)
            if ctx.rank in ranks:
                self._groups["tp"] = group
                self._ranks["tp"] = ranks
        if pp > 1:  # the stage boundary: rank i of every stage's TP group, stage by stage
            self.group_names["pp"] = "pp_pg"
            for index in range(tp):
                ranks = tuple(offset + stage * tp + index for stage in range(pp))
                group = dist.new_group(list(ranks), timeout=timeout)
                if ctx.rank in ranks:
                    self._groups["pp"] = group
                    self._ranks["pp"] = ranks
        log.info(
            "layout: tp=%s pp=%s driver_out_of_mesh=%s tp_ranks=%s", tp, pp, driver_out_of_mesh, self._ranks.get("tp")
        )

    def require(self, handed: dist.ProcessGroup, axis: str, **ids: object) -> dist.ProcessGroup:
        """`handed` if it is this layout's `axis` group; else WrongGroup, before any backend call."""
        if self._groups.get(axis) is handed:
            return handed
        used = next((self.group_names[name] for name, g in self._groups.items() if g is handed), "unknown")
        expected = self.group_names[axis]
        ids = {k: v for k, v in ids.items() if k != "group"}
        events.emit("wrong_group", group_used=used, expected_group=expected, rank=self.ctx.rank, **ids)
        raise WrongGroup(
            f"rank {self.ctx.rank}: a collective expecting group '{expected}' was handed '{used}' ({ids});"
            f" stopped before the backend call (on '{used}' it would wait for ranks that never join)"
        )

    def group(self, axis: str) -> dist.ProcessGroup:
        if axis not in self._groups:
            raise KeyError(f"mesh axis {axis!r} is not built; built axes: {sorted(self._groups)}")
        return self._groups[axis]

    def ranks(self, axis: str) -> tuple[int, ...]:
        return self._ranks[axis]

    def axis_rank(self, axis: str) -> int:
        return self._ranks[axis].index(self.ctx.rank)
