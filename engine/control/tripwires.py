"""Franken-model tripwires: ranks that run the same collectives on different data.

- Input digest: sha256 of every broadcast tensor as each rank will use it, compared
  across ranks in the pre-generator agreement (engine.topology.tp), which always runs.
- Shard fingerprint: sha256 of each rank's weight shard and of its replicated weights.
  Every rank derives the *expected* fingerprints of every shard from the seed at init, so
  a mutated shard is caught by every rank at the next check (init, then every N calls).
"""

from __future__ import annotations

import hashlib

import torch
from tabulate import tabulate
from torch import nn

from engine.errors import FingerprintMismatch
from engine.model.weights import Shard, full_shape, full_tensor, shard_of


def tensor_digest(t: torch.Tensor) -> str:
    data = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{data.dtype}{list(data.shape)}".encode())
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()[:16]


def input_digest(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    return {key: tensor_digest(t) for key, t in sorted(tensors.items())}


def _fingerprint(params: list[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for name, t in params:
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return h.hexdigest()[:16]


def shard_fingerprint(model: nn.Module, rules: dict[str, tuple[Shard, float, float]]) -> dict[str, str]:
    """This rank's {"shard": ..., "replicated": ...} fingerprints, as the weights are now."""
    sharded, replicated = [], []
    for name, param in sorted(model.named_parameters()):
        (replicated if rules[name][0] is Shard.REPLICATED else sharded).append((name, param))
    return {"shard": _fingerprint(sharded), "replicated": _fingerprint(replicated)}


def expected_fingerprints(
    model: nn.Module, rules: dict[str, tuple[Shard, float, float]], *, seed: int, tp_size: int
) -> list[dict[str, str]]:
    """What `shard_fingerprint` must return on each TP rank, derived from the seed."""
    params = dict(model.named_parameters())
    per_rank: list[tuple[list, list]] = [([], []) for _ in range(tp_size)]
    for name in sorted(params):
        rule, mean, std = rules[name]
        full = full_tensor(seed, name, full_shape(tuple(params[name].shape), rule, tp_size), mean, std)
        for r in range(tp_size):
            shard = shard_of(full, rule, r, tp_size).to(params[name].dtype)
            per_rank[r][1 if rule is Shard.REPLICATED else 0].append((name, shard))
    return [{"shard": _fingerprint(s), "replicated": _fingerprint(rep)} for s, rep in per_rank]


def check_fingerprints(actual: list[dict[str, str]], expected: list[dict[str, str]], ranks: tuple[int, ...]) -> None:
    """Raise FingerprintMismatch naming each rank whose weights are not what the seed says."""
    rows = []
    for i, rank in enumerate(ranks):
        for kind in ("shard", "replicated"):
            if actual[i][kind] != expected[i][kind]:
                rows.append([rank, kind, expected[i][kind], actual[i][kind]])
    if rows:
        table = tabulate(rows, headers=["rank", "weights", "expected (from seed)", "actual"])
        raise FingerprintMismatch(
            f"weight fingerprint mismatch on rank(s) {sorted({r[0] for r in rows})}: the weights were changed"
            f" after load (or loaded from another seed); restart from a clean load\n{table}"
        )
