"""Joining the job and building its process groups, in one object.

`init_rank` joins the default group with an explicit timeout; `ParallelLayout` builds the
TP groups once, checks `tp * pp == world_size`, and hands groups out by axis. Nothing
here is global: callers pass `layout.group("tp")` to whatever needs a group.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from engine import knobs
from engine.config import DistConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RankContext:
    rank: int  # global rank
    world_size: int  # ranks in the job
    local_rank: int  # rank on this host
    device: torch.device  # where this rank's tensors live
    backend: str  # resolved collective backend (gloo / nccl)
    timeout_s: float  # timeout every group of this job was created with


def init_rank(cfg: DistConfig) -> RankContext:
    """Join the default process group from torchrun-style env, with `cfg.timeout_s`."""
    rank = knobs.read("RANK")
    world_size = knobs.read("WORLD_SIZE")
    if rank is None or world_size is None:
        raise RuntimeError(
            "RANK/WORLD_SIZE are not set: start this under `torchrun --nproc-per-node=N` "
            "or through compile_guard's launcher"
        )
    local_rank = knobs.read("LOCAL_RANK")
    device_type = cfg.resolved_device_type()
    backend = cfg.resolved_backend()
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for but torch.cuda.is_available() is False")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device(device_type)
    timeout = datetime.timedelta(seconds=cfg.timeout_s)
    # device_id binds NCCL communicators eagerly; gloo takes no device.
    extra = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(
        backend=backend, rank=rank, world_size=world_size, timeout=timeout, **extra
    )
    log.info(
        "joined: rank=%s world_size=%s backend=%s device=%s timeout_s=%s",
        rank, world_size, backend, device, cfg.timeout_s,
    )
    return RankContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=device,
        backend=backend,
        timeout_s=cfg.timeout_s,
    )


def shutdown_rank() -> None:
    """Always called on exit: a live group at interpreter exit aborts with rc 134."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
