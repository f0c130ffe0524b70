"""A worked example for `check`'s quality measurement: a tensor-parallel MLP block as an `nn.Module`.

    python -m compile_guard check --target docs.examples.quality_block:block --baselines my_baselines

An adaLN-style block (LayerNorm, a modulated column-parallel up projection, tanh GELU, a row-parallel down
projection joined by a functional all-reduce, a gated residual). It is an `nn.Module`, so the accuracy check
casts it to fp64 for its reference; its output follows the all-reduce, so it is declared replicated and
compared bitwise across the ranks. The matrix's NU rows run it with inductor patched (a numerics change, a lost
fusion, a slower compile, a numerics change on one rank).
"""

from __future__ import annotations

import torch
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from torch import nn

from compile_guard import GuardTarget, TargetContext

DIM, HIDDEN, BATCH, TOKENS = 64, 1024, 8, 64  # a pointwise-heavy shard: fusion matters


class TPBlock(nn.Module):
    def __init__(self, ctx: TargetContext) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)  # the same full weights on every rank; each keeps its shard
        shard = HIDDEN // ctx.world_size
        up = torch.randn(HIDDEN, DIM, generator=gen) * DIM**-0.5
        down = torch.randn(DIM, HIDDEN, generator=gen) * HIDDEN**-0.5
        self.norm = nn.LayerNorm(DIM)
        self.up = nn.Parameter(up[ctx.rank * shard : (ctx.rank + 1) * shard].clone())  # column-parallel
        self.down = nn.Parameter(down[:, ctx.rank * shard : (ctx.rank + 1) * shard].clone())  # row-parallel
        self.scale = nn.Parameter(torch.randn(DIM, generator=gen) * 0.1)
        self.shift = nn.Parameter(torch.randn(DIM, generator=gen) * 0.1)
        self.group = ctx.tp_group

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        h = self.norm(x) * (1 + self.scale) + self.shift
        a = h @ self.up.T  # [B, T, HIDDEN / tp]
        # pointwise work between the two matmuls, as an adaLN block has: fused, one kernel; unfused, one each
        h = F.gelu(a, approximate="tanh") * torch.sigmoid(a * 1.702) + 0.1 * torch.tanh(a)
        h = h * (1 + 0.5 * torch.cos(a)) - 0.05 * a * a + torch.exp(-a.abs())
        out = funcol.all_reduce(h @ self.down.T, "sum", self.group)  # [B, T, DIM]: equal on every rank
        return x + out * torch.sigmoid(gate)


def block(ctx: TargetContext) -> GuardTarget:
    model = TPBlock(ctx).to(ctx.device).eval()
    inputs = [
        (
            torch.randn(BATCH, TOKENS, DIM, generator=torch.Generator().manual_seed(s)).to(ctx.device),
            torch.randn(DIM, generator=torch.Generator().manual_seed(s + 10)).to(ctx.device),
        )
        for s in (1, 2)
    ]
    return GuardTarget(fn=model, inputs=inputs, replicated=True)
