"""Hand-written Megatron-style tensor parallelism (functional collectives), and rank-only graph breaks in it.

    python -m compile_guard check --target docs.examples.megatron_tp:healthy --backend aot_eager
    python -m compile_guard baseline refresh --target docs.examples.megatron_tp:warn_rank0 --backend aot_eager

The layers are what Megatron-LM's `ColumnParallelLinear` / `RowParallelLinear` do, written out: a
column-parallel projection keeps its output sharded, a row-parallel one sums its partial products
over the TP group (`funcol.all_reduce`). Each is its own `nn.Module`, so a break inside one is a
break in a *nested* frame of the compiled block. The faulty variants are the rank-only breaks the
compile agreement proves by the ranks' positions (compile_guard.agreement.protocol, rules 7-8):

- `warn_rank0`: rank 0 alone issues a `warnings.warn` inside the second row-parallel layer (a library
  deprecation warning that fires on one rank: a graph break there only);
- `break_both`: rank 0 breaks in the first layer, rank 1 in the second (each broke somewhere else);
- `skip_rank1`: rank 1 alone wraps its all-reduce in `torch.compiler.disable()` inside a loop over the
  layers, so dynamo skips the block's frame there and compiles its callees as frames of their own.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed._functional_collectives as funcol

from compile_guard import GuardTarget, TargetContext

DIM, HIDDEN, TOKENS, LAYERS = 64, 128, 8, 2


class ColumnParallelLinear(torch.nn.Module):
    """y = x @ W[shard].T: the output stays sharded over the TP group (no collective)."""

    def __init__(self, ctx: TargetContext, full_in: int, full_out: int, gen: torch.Generator) -> None:
        super().__init__()
        weight = torch.randn(full_out, full_in, generator=gen) * full_in**-0.5
        self.weight = torch.nn.Parameter(weight.chunk(ctx.world_size, 0)[ctx.rank].to(ctx.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T


def _disabled_all_reduce(x: torch.Tensor, group: str) -> torch.Tensor:
    return funcol.all_reduce(x, "sum", group)


class RowParallelLinear(torch.nn.Module):
    """y = all_reduce(x[shard] @ W[:, shard].T): partial products summed over the TP group."""

    def __init__(
        self,
        ctx: TargetContext,
        full_in: int,
        full_out: int,
        gen: torch.Generator,
        *,
        warn: bool = False,
        disable: bool = False,
    ) -> None:
        super().__init__()
        weight = torch.randn(full_out, full_in, generator=gen) * full_in**-0.5
        self.weight = torch.nn.Parameter(weight.chunk(ctx.world_size, 1)[ctx.rank].to(ctx.device))
        self.group, self.warn, self.disable = ctx.tp_group, warn, disable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        partial = x @ self.weight.T
        if self.warn:  # a library warning that fires on one rank only (say, a deprecated argument seen there)
            warnings.warn("RowParallelLinear: sequence_parallel is deprecated", DeprecationWarning, stacklevel=1)
        if self.disable:
            return torch.compiler.disable(_disabled_all_reduce)(partial, self.group)
        return funcol.all_reduce(partial, "sum", self.group)


class Block(torch.nn.Module):
    def __init__(self, ctx: TargetContext, *, warn_in: int | None, disable: bool) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)  # the same full weights on every rank; each keeps its shard
        self.ups = torch.nn.ModuleList(ColumnParallelLinear(ctx, DIM, HIDDEN, gen) for _ in range(LAYERS))
        self.downs = torch.nn.ModuleList(
            RowParallelLinear(ctx, HIDDEN, DIM, gen, warn=warn_in == i, disable=disable) for i in range(LAYERS)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.downs[0](torch.nn.functional.gelu(self.ups[0](x)))
        x = x + self.downs[1](torch.nn.functional.gelu(self.ups[1](x)))
        return x


class LoopBlock(Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for up, down in zip(self.ups, self.downs, strict=True):
            x = x + down(torch.nn.functional.gelu(up(x)))
        return x


def _target(ctx: TargetContext, block: Block) -> GuardTarget:
    inputs = [(torch.randn(TOKENS, DIM, generator=torch.Generator().manual_seed(s)).to(ctx.device),) for s in (1, 2)]
    return GuardTarget(fn=block, inputs=inputs)


def healthy(ctx: TargetContext) -> GuardTarget:
    return _target(ctx, Block(ctx, warn_in=None, disable=False))


def warn_every_rank(ctx: TargetContext) -> GuardTarget:
    """Healthy: the same warning on every rank breaks every rank's graph at the same place."""
    return _target(ctx, Block(ctx, warn_in=1, disable=False))


def warn_rank0(ctx: TargetContext) -> GuardTarget:
    return _target(ctx, Block(ctx, warn_in=1 if ctx.rank == 0 else None, disable=False))


def break_both(ctx: TargetContext) -> GuardTarget:
    return _target(ctx, Block(ctx, warn_in=0 if ctx.rank == 0 else 1, disable=False))


def skip_rank1(ctx: TargetContext) -> GuardTarget:
    return _target(ctx, LoopBlock(ctx, warn_in=None, disable=ctx.rank == 1))
