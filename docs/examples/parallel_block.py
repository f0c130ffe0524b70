"""A GPT-J-style parallel block under inductor: two independent row-parallel all-reduces, and inductor's passes.

    python -m compile_guard check --target docs.examples.parallel_block:healthy --backend inductor

Attention and MLP read the same normed input and each ends in a row-parallel projection whose
partial sums are all-reduced over the TP group (functional collectives): two independent
all-reduces of one shape, which inductor's passes are free to merge (post-grad bucketing) or
reorder. What the compiled code issues is decided there, after the graph dynamo handed over; the
compile agreement compares it (compile_guard.agreement.protocol, rule 9):

- `bucket_every_rank`: `bucket_all_reduces_fx = "all"` on every rank — one bucketed all-reduce, healthy;
- `bucket_rank1`: the same on rank 1 only (a setting one host's launcher sets): named by the settings;
- `pass_rank1`: one custom post-grad pass, the same (same uuid) on every rank, whose decision depends on a
  rank-local value — standing for runtime estimates or benchmarks that differ by rank — swaps the two
  all-reduces on rank 1: both ranks issue two all-reduces of one shape, each summing the other's buffer
  with its own (silent drift; a hang where the shapes differ). Only the issued schedule shows it;
- `pass_every_rank`: the same pass deciding alike on every rank: healthy.

A pass that decides by rank under one uuid also poisons inductor's caches (one key, two programs): the
matrix rows that use it compile with the caches off, in a cache directory of their own.
"""

from __future__ import annotations

import torch
import torch.distributed._functional_collectives as funcol
from torch._inductor.custom_graph_pass import CustomGraphPass

from compile_guard import GuardTarget, TargetContext

DIM, HIDDEN, TOKENS = 64, 128, 8


class SwapAllReduces(CustomGraphPass):
    """A post-grad pass that moves the first all-reduce (and its wait) after the second when `swap` holds."""

    def __init__(self, swap: bool) -> None:
        self.swap = swap  # decided on this rank, from a value of this rank's (an estimate, a benchmark)

    def __call__(self, graph: torch.fx.Graph) -> None:
        reduces = [n for n in graph.nodes if n.op == "call_function" and "all_reduce" in str(n.target)]
        if not self.swap or len(reduces) < 2:
            return
        first, second = reduces[0], reduces[1]
        (first_wait,) = [u for u in first.users if "wait_tensor" in str(u.target)]
        (second_wait,) = [u for u in second.users if "wait_tensor" in str(u.target)]
        second_wait.append(first)
        first.append(first_wait)

    def uuid(self) -> str:
        return "compile_guard.docs.SwapAllReduces.v1"  # one identity on every rank: the decision is not in it


class ParallelBlock(torch.nn.Module):
    def __init__(self, ctx: TargetContext) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)  # the same full weights on every rank; each keeps its shard

        def shard(rows: int, cols: int, dim: int) -> torch.nn.Parameter:
            full = torch.randn(rows, cols, generator=gen) * cols**-0.5
            return torch.nn.Parameter(full.chunk(ctx.world_size, dim)[ctx.rank].to(ctx.device))

        self.attn_in, self.attn_out = shard(HIDDEN, DIM, 0), shard(DIM, HIDDEN, 1)  # column-, then row-parallel
        self.mlp_in, self.mlp_out = shard(HIDDEN, DIM, 0), shard(DIM, HIDDEN, 1)
        self.group = ctx.tp_group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.layer_norm(x, (DIM,))
        attn = funcol.all_reduce(torch.tanh(h @ self.attn_in.T) @ self.attn_out.T, "sum", self.group)
        mlp = funcol.all_reduce(torch.nn.functional.gelu(h @ self.mlp_in.T) @ self.mlp_out.T, "sum", self.group)
        return x + attn + mlp


def _target(ctx: TargetContext) -> GuardTarget:
    inputs = [(torch.randn(TOKENS, DIM, generator=torch.Generator().manual_seed(s)).to(ctx.device),) for s in (1, 2)]
    return GuardTarget(fn=ParallelBlock(ctx), inputs=inputs)


def _inductor_config():  # noqa: ANN202 - torch's config module
    import torch._inductor.config as config  # the settings a user sets; compile_guard compares them all

    return config


def healthy(ctx: TargetContext) -> GuardTarget:
    return _target(ctx)


def bucket_every_rank(ctx: TargetContext) -> GuardTarget:
    _inductor_config().bucket_all_reduces_fx = "all"
    return _target(ctx)


def bucket_rank1(ctx: TargetContext) -> GuardTarget:
    if ctx.rank == 1:
        _inductor_config().bucket_all_reduces_fx = "all"
    return _target(ctx)


def pass_rank1(ctx: TargetContext) -> GuardTarget:
    _inductor_config().post_grad_custom_post_pass = SwapAllReduces(swap=ctx.rank == 1)
    return _target(ctx)


def pass_every_rank(ctx: TargetContext) -> GuardTarget:
    _inductor_config().post_grad_custom_post_pass = SwapAllReduces(swap=True)
    return _target(ctx)


def _spmd_check() -> None:
    """torch's own check (2.12+): a post-grad graph hash all-gathered on the default group during the compile,
    before bucketing and reordering (it runs when comm reordering is on)."""
    config = _inductor_config()
    config.reorder_for_compute_comm_overlap = True
    config.aten_distributed_optimizations.spmd_check = True


def spmd_check_every_rank(ctx: TargetContext) -> GuardTarget:
    """Healthy: torch's spmd_check and comm reordering on every rank, beside compile_guard's agreement."""
    _spmd_check()
    return _target(ctx)


def spmd_check_pass_rank1(ctx: TargetContext) -> GuardTarget:
    """`pass_rank1` with torch's spmd_check on: it warns (its hash differs); compile_guard stops the job."""
    _spmd_check()
    return pass_rank1(ctx)
