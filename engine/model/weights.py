"""Deterministic weights: every rank derives the same full tensors from the seed, then
keeps its shard. No checkpoint travels, and a TP=1 run of the same seed is the reference.
"""

from __future__ import annotations

import enum
import hashlib

import torch
from torch import nn


class Shard(enum.Enum):
    REPLICATED = "replicated"  # every rank holds the full tensor
    COLWISE = "colwise"  # split dim 0 (output features / heads): column-parallel
    ROWWISE = "rowwise"  # split dim 1 (input features): row-parallel, joined by all-reduce


def _name_seed(seed: int, name: str) -> int:
    # A per-tensor seed keyed by name: adding a parameter never reshuffles the others.
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def full_tensor(seed: int, name: str, shape: tuple[int, ...], mean: float, std: float) -> torch.Tensor:
    """mean + std * N(0, 1), drawn on CPU so every device type derives the same values."""
    gen = torch.Generator(device="cpu").manual_seed(_name_seed(seed, name))
    return torch.randn(shape, generator=gen) * std + mean


def shard_of(full: torch.Tensor, rule: Shard, tp_rank: int, tp_size: int) -> torch.Tensor:
    if rule is Shard.REPLICATED or tp_size == 1:
        return full
    dim = 0 if rule is Shard.COLWISE else 1
    assert full.shape[dim] % tp_size == 0, (full.shape, rule, tp_size)
    return full.chunk(tp_size, dim=dim)[tp_rank]


def full_shape(local: tuple[int, ...], rule: Shard, tp_size: int) -> tuple[int, ...]:
    """The unsharded shape of a parameter whose shard on one rank has shape `local`."""
    shape = list(local)
    if rule is Shard.COLWISE:
        shape[0] *= tp_size
    elif rule is Shard.ROWWISE:
        shape[1] *= tp_size
    return tuple(shape)


def materialize(
    module: nn.Module,
    rules: dict[str, tuple[Shard, float, float]],
    *,
    seed: int,
    tp_rank: int,
    tp_size: int,
) -> None:
    """Fill every parameter of `module` with its shard of the seeded full tensor.

    `rules` maps parameter name -> (shard rule, init mean, init std); a parameter without a rule is
    an internal error (a new layer must say how it shards).
    """
    params = dict(module.named_parameters())
    missing = sorted(set(params) - set(rules))
    assert not missing, f"parameters without a shard rule: {missing}"
    with torch.no_grad():
        for name, param in params.items():
            rule, mean, std = rules[name]
            full = full_tensor(seed, name, full_shape(tuple(param.shape), rule, tp_size), mean, std)
            param.copy_(shard_of(full, rule, tp_rank, tp_size))
