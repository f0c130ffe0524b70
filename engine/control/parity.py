"""The startup parity handshake: every rank states its settings; any difference stops all.

Each rank contributes a flat {key: value} dict (parity env knobs, runtime arguments,
model/compile config, versions). One JSON all-gather gives every rank the same view, so
every rank reaches the same verdict and exits together, before the first inference,
printing a per-key, per-rank table of exactly the keys that differ.
"""

from __future__ import annotations

import dataclasses
import platform
from typing import Any

import torch
import torch.distributed as dist
from tabulate import tabulate

from engine import events, knobs
from engine.collectives import all_gather_json
from engine.errors import ParityMismatch


def diff_table(per_rank: list[dict[str, Any]], ranks: tuple[int, ...]) -> list[list[Any]]:
    """Rows [key, value@rank...] for every key whose value is not the same on all ranks."""
    keys = sorted(set().union(*per_rank))
    rows = []
    for key in keys:
        values = [d.get(key, "<unset>") for d in per_rank]
        if any(v != values[0] for v in values):
            rows.append([key, *values])
    return rows


def handshake(
    name: str, mine: dict[str, Any], *, group: dist.ProcessGroup, ranks: tuple[int, ...], device: torch.device
) -> None:
    """Gather `mine` from every rank of `group`; raise ParityMismatch on any difference."""
    per_rank = all_gather_json(mine, group=group, device=device)
    rows = diff_table(per_rank, ranks)
    if not rows:
        events.emit("parity_ok", handshake=name, keys=len(mine), ranks=list(ranks))
        return
    table = tabulate(rows, headers=["key", *(f"rank{r}" for r in ranks)])
    events.emit("parity_mismatch", handshake=name, keys=[r[0] for r in rows], ranks=list(ranks))
    raise ParityMismatch(
        f"{name} parity mismatch on {len(rows)} key(s) {[r[0] for r in rows]}: make every rank use the "
        f"same values\n{table}"
    )


def env_payload(spec: Any, ctx: Any, **configs: Any) -> dict[str, Any]:
    """The env handshake's payload: parity knobs, the run spec, the configs it became (keyed by the
    name each is passed under: model=..., compile=...), versions."""
    payload = {f"env.{k}": v for k, v in knobs.parity_values().items()}
    payload.update(spec.parity_items())
    for prefix, cfg in configs.items():
        payload.update({f"{prefix}.{k}": v for k, v in dataclasses.asdict(cfg).items()})
    payload.update(
        {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "dist_backend": ctx.backend,
            "device_type": ctx.device.type,
            "world_size": ctx.world_size,
        }
    )
    return payload
