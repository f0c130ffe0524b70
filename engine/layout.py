"""The process groups of one job, built once, in one object.

`ParallelLayout` builds the TP groups, checks `tp * pp == world_size`, and hands groups
out by axis. Nothing here is global: callers pass `layout.group("tp")` to whatever needs
a group. Joining the job itself is `engine.lifecycle`.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RankContext:
    rank: int  # global rank
    world_size: int  # ranks in the job
    local_rank: int  # rank on this host
    device: torch.device  # where this rank's tensors live
    backend: str  # resolved collective backend (gloo / nccl)
    timeout_s: float  # timeout every group of this job was created with


class ParallelLayout:
    """Builds and names the process groups of one job.

    Ranks are laid out tp-major: the TP group of rank r is the `tp` consecutive ranks that
    contain r. Every rank creates every group, in the same order, as new_group requires.
    """

    def __init__(self, ctx: RankContext, *, tp: int, pp: int = 1) -> None:
        if tp * pp != ctx.world_size:
            raise ValueError(
                f"tp({tp}) * pp({pp}) = {tp * pp} does not match world_size({ctx.world_size});"
                f" launch {tp * pp} ranks or pick tp/pp with tp * pp == {ctx.world_size}"
            )
        self.ctx = ctx
        self.tp = tp
        self.pp = pp
        timeout = datetime.timedelta(seconds=ctx.timeout_s)
        self._groups: dict[str, dist.ProcessGroup] = {}
        self._ranks: dict[str, tuple[int, ...]] = {}
        for stage in range(pp):
            ranks = tuple(range(stage * tp, (stage + 1) * tp))
            group = dist.new_group(list(ranks), timeout=timeout)
            if ctx.rank in ranks:
                self._groups["tp"] = group
                self._ranks["tp"] = ranks
        log.info("layout: tp=%s pp=%s tp_ranks=%s", tp, pp, self._ranks["tp"])

    def group(self, axis: str) -> dist.ProcessGroup:
        if axis not in self._groups:
            raise KeyError(f"mesh axis {axis!r} is not built; built axes: {sorted(self._groups)}")
        return self._groups[axis]

    def ranks(self, axis: str) -> tuple[int, ...]:
        return self._ranks[axis]

    def axis_rank(self, axis: str) -> int:
        return self._ranks[axis].index(self.ctx.rank)
