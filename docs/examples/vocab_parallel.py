"""Megatron/vLLM-style tensor parallelism written by hand with functional collectives: a vocab-parallel
embedding and a column-parallel LM head. Healthy SPMD code whose graphs differ by rank in constants only.

    python -m compile_guard baseline refresh --target docs.examples.vocab_parallel:model --backend aot_eager \\
        --baselines my_baselines
    python -m compile_guard check --target docs.examples.vocab_parallel:model --backend aot_eager \\
        --baselines my_baselines

Rank r holds embedding rows [r*V/tp, (r+1)*V/tp); the bounds are Python ints on the module, so dynamo
bakes them into each rank's graph: rank 0 compiles `x < 0`, `x >= 128`, `x - 0`, rank 1 `x < 128`,
`x >= 256`, `x - 128`. Same ops, same collectives: the compile agreement lists these rank-varying
constants with their sites and stops nothing; `check` baselines them (a new one is a regression).
`build(ctx, rank_scale=True)` adds what must not pass silently: `h * (0.5 if rank == 1 else 1.0)`.
"""

from __future__ import annotations

import torch
import torch.distributed._functional_collectives as funcol

from compile_guard import GuardTarget, TargetContext

VOCAB, DIM, TOKENS = 256, 32, 12


class VocabParallelEmbedding(torch.nn.Module):
    def __init__(self, weight: torch.Tensor, *, rank: int, world_size: int, group: torch.distributed.ProcessGroup):
        super().__init__()
        per_rank = VOCAB // world_size
        self.start, self.end = rank * per_rank, (rank + 1) * per_rank  # Python ints: constants in the graph
        self.weight = torch.nn.Parameter(weight[self.start : self.end].clone())
        self.group = group

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        outside = (ids < self.start) | (ids >= self.end)
        local = (ids - self.start).masked_fill(outside, 0)
        rows = torch.nn.functional.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return funcol.all_reduce(rows, "sum", self.group)  # every token's row comes from exactly one rank


class ColumnParallelHead(torch.nn.Module):
    def __init__(self, weight: torch.Tensor, *, rank: int, world_size: int, group: torch.distributed.ProcessGroup):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.chunk(world_size, 0)[rank].clone())  # [V/tp, DIM]
        self.group = group

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return funcol.all_gather_tensor(h @ self.weight.T, -1, self.group)  # [T, V]: every rank's logits


class Model(torch.nn.Module):
    def __init__(self, ctx: TargetContext, *, rank_scale: bool) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)  # the same full weights on every rank; each keeps its shard
        embedding, head = torch.randn(VOCAB, DIM, generator=gen), torch.randn(VOCAB, DIM, generator=gen) * DIM**-0.5
        shard = {"rank": ctx.rank, "world_size": ctx.world_size, "group": ctx.tp_group}
        self.embed = VocabParallelEmbedding(embedding, **shard)
        self.head = ColumnParallelHead(head, **shard)
        self.scale = (0.5 if ctx.rank == 1 else 1.0) if rank_scale else 1.0  # a debug scale on one rank

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.embed(ids)) * self.scale
        return self.head(h)


def build(ctx: TargetContext, *, rank_scale: bool = False) -> GuardTarget:
    model = Model(ctx, rank_scale=rank_scale).to(ctx.device)
    inputs = [
        (torch.randint(0, VOCAB, (TOKENS,), generator=torch.Generator().manual_seed(s)).to(ctx.device),) for s in (1, 2)
    ]
    return GuardTarget(fn=model, inputs=inputs)


def model(ctx: TargetContext) -> GuardTarget:
    return build(ctx)
