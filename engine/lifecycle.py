"""A rank's life: join the job, record how it failed, always leave the job.

`joined(cfg)` wraps a rank's whole body. It joins the default group with an explicit
timeout, and on any exception writes a failure record — the moment and the error —
into the launcher's run directory *before* tearing down, so the launcher can tell the
rank that failed first from the peers that failed because of it (a peer's error comes
after, even when its process exits before). `destroy_process_group` runs on every path:
a live group at interpreter exit aborts with rc 134.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from engine import events, knobs, torch_private
from engine.config import DistConfig
from engine.failure import record_failure
from engine.layout import RankContext

log = logging.getLogger(__name__)


def init_rank(cfg: DistConfig, exit_status: Callable[[int], int] = int) -> RankContext:
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
        # More ranks than GPUs on a host (gloo over CUDA tensors, the smoke test on one GPU) share them.
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device(device_type)
    timeout = datetime.timedelta(seconds=cfg.timeout_s)
    # device_id binds NCCL communicators eagerly; gloo takes no device.
    extra = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timeout, **extra)
    events.emit("joined", rank=rank, world_size=world_size, backend=backend, timeout_s=cfg.timeout_s)
    log.info(
        "joined: rank=%s world_size=%s backend=%s device=%s timeout_s=%s",
        rank,
        world_size,
        backend,
        device,
        cfg.timeout_s,
    )
    return RankContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=device,
        backend=backend,
        timeout_s=cfg.timeout_s,
        exit_status=exit_status,
    )


def shutdown_rank() -> None:
    """Always called on exit: a live group at interpreter exit aborts with rc 134."""
    if dist.is_available() and dist.is_initialized():
        torch_private.destroy_process_groups()


@contextlib.contextmanager
def joined(cfg: DistConfig, exit_status: Callable[[int], int] = int) -> Iterator[RankContext]:
    """`with joined(cfg) as ctx:` — the body of a rank process (`exit_status`: RankContext's)."""
    try:
        ctx = init_rank(cfg, exit_status)
        yield ctx
    except BaseException as exc:
        clean_exit = isinstance(exc, SystemExit) and exc.code in (0, None)
        if not clean_exit:
            record_failure(exc)
        raise
    finally:
        shutdown_rank()
