"""Cross-rank output parity: an output replicated across the group must be bitwise-equal on every rank.

Replicated = the engine's generator output (after its all-reduce), a DTensor output whose placements are all
`Replicate`, or what a target declares (`GuardTarget.replicated`). A sharded output is never compared. Each rank
sends a digest of each replicated output's bytes (canonical JSON through engine.collectives: data, never pickle);
on a difference the ranks gather that output whole and name the first differing element.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist

from engine.collectives import all_gather_json
from engine.errors import CompileAsymmetry

_DIGEST = 32  # hex digits of sha256 kept


class OutputDrift(CompileAsymmetry):
    """Replicated outputs that differ across the ranks: silent drift, made loud (exit 1)."""


def is_replicated_dtensor(value: Any) -> bool:
    placements = getattr(value, "placements", None)
    return placements is not None and all(type(p).__name__ == "Replicate" for p in placements)


def local(value: Any) -> torch.Tensor:
    return value.to_local() if hasattr(value, "to_local") else value


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).cpu()


def _digest(t: torch.Tensor) -> str:
    meta = f"{t.dtype}{list(t.shape)}".encode()
    return hashlib.sha256(meta + _bytes(t).numpy().tobytes()).hexdigest()[:_DIGEST]


def check(
    outputs: list[tuple[str, torch.Tensor]],
    *,
    group: dist.ProcessGroup,
    ranks: tuple[int, ...],
    device: torch.device,
    what: str,
) -> dict[str, Any]:
    """Every rank with the same `outputs` names (their order included); OutputDrift on the first difference."""
    if not outputs:
        return {"replicated": [], "equal": True}
    gathered = all_gather_json([_digest(t) for _, t in outputs], group=group, device=device)
    for i, (name, tensor) in enumerate(outputs):
        if all(g[i] == gathered[0][i] for g in gathered):
            continue
        # every rank sees the same digests, so every rank gathers this output whole (its bytes as hex: exact)
        every = all_gather_json(_bytes(tensor).numpy().tobytes().hex(), group=group, device=device)
        values = [
            torch.frombuffer(bytearray(bytes.fromhex(h)), dtype=torch.uint8).view(tensor.dtype).reshape(tensor.shape)
            for h in every
        ]
        differ = [r for r, v in zip(ranks, values, strict=True) if not torch.equal(v, values[0])]
        first = values[ranks.index(differ[0])]
        flat = int(torch.nonzero((first != values[0]).reshape(-1))[0].item())
        index = [int(x) for x in torch.unravel_index(torch.tensor(flat), tensor.shape)] if tensor.dim() else []
        per_rank = ", ".join(f"rank {r}: {v.reshape(-1)[flat].item()!r}" for r, v in zip(ranks, values, strict=True))
        raise OutputDrift(
            f"cross-rank output drift: replicated output {name} of {what} differs across the ranks:"
            f" ranks {differ} differ from rank {ranks[0]}; first differing element at index {index}:"
            f" {per_rank}. The ranks computed one replicated value differently (a rank-only kernel,"
            " setting or input); every rank's log has this line"
        )
    return {"replicated": [name for name, _ in outputs], "equal": True}
