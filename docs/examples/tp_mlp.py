"""A worked example target for `compile-guard check --target`: a tensor-parallel MLP block.

    python -m compile_guard check --target docs.examples.tp_mlp:good --baselines my_baselines
    python -m compile_guard check --target docs.examples.tp_mlp:rank_branch --baselines my_baselines

`good` is what a user would write: column-parallel up projection, row-parallel down
projection joined by a functional all-reduce on the TP group it is given. `rank_branch`
adds a rank-dependent Python branch inside the compiled function — rank 0 compiles a
different graph from rank 1 — which the post-warmup compile-health gather catches.
"""

from __future__ import annotations

import torch
import torch.distributed._functional_collectives as funcol

from compile_guard import GuardTarget, TargetContext

DIM, HIDDEN, TOKENS = 64, 256, 16


def _mlp(ctx: TargetContext, *, rank_branch: bool) -> GuardTarget:
    gen = torch.Generator().manual_seed(0)  # same full weights on every rank, then each keeps its shard
    up = torch.randn(HIDDEN, DIM, generator=gen).chunk(ctx.world_size, 0)[ctx.rank].to(ctx.device) * DIM**-0.5
    down = torch.randn(DIM, HIDDEN, generator=gen).chunk(ctx.world_size, 1)[ctx.rank].to(ctx.device) * HIDDEN**-0.5
    group, rank = ctx.tp_group, ctx.rank

    def block(x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(x @ up.T)  # [T, HIDDEN / tp]
        if rank_branch and rank == 0:
            h = h * 0.5  # a "debug scale" on one rank: a different graph there
        return funcol.all_reduce(h @ down.T, "sum", group)  # [T, DIM]

    inputs = [(torch.randn(TOKENS, DIM, generator=torch.Generator().manual_seed(s)).to(ctx.device),) for s in (1, 2)]
    return GuardTarget(fn=block, inputs=inputs)


def good(ctx: TargetContext) -> GuardTarget:
    return _mlp(ctx, rank_branch=False)


def rank_branch(ctx: TargetContext) -> GuardTarget:
    return _mlp(ctx, rank_branch=True)


def item_break(ctx: TargetContext) -> GuardTarget:
    """`good` with an accepted graph break on every rank: a scale read with `.item()` (a data-dependent value
    dynamo cannot trace without capture_scalar_outputs). Healthy and symmetric; its baseline records the break,
    which torch releases name differently ("Tensor.item" on 2.7, "Unsupported Tensor.item() call ..." on 2.8)."""
    target = good(ctx)
    scale = torch.ones((), device=ctx.device)

    def block(x: torch.Tensor) -> torch.Tensor:
        return target.fn(x * scale.item())

    return GuardTarget(fn=block, inputs=target.inputs)


def rank_shape(ctx: TargetContext) -> GuardTarget:
    """Rank 1 alone gets a longer second input: it would recompile alone, then all-reduce a tensor
    of another size than its peer's. The per-step input agreement stops it before the step."""
    target = good(ctx)
    if ctx.rank == 1:
        longer = torch.randn(TOKENS + 1, DIM, generator=torch.Generator().manual_seed(2)).to(ctx.device)
        return GuardTarget(fn=target.fn, inputs=[target.inputs[0], (longer,)])
    return target


def broken(ctx: TargetContext) -> GuardTarget:
    """A factory that fails (for the loading tests): the code under test crashed, so exit 3 with its traceback."""
    raise RuntimeError("weights not found at /nonexistent/ckpt")


def value_error_at_step(ctx: TargetContext) -> GuardTarget:
    """`good`, whose model raises an ordinary ValueError at step 1 (a shape check of the user's): a crash of the
    code under test — exit 3 with its traceback — never an input error."""
    target = good(ctx)

    def before_step(step: int) -> None:
        if step == 1:
            raise ValueError("expected 16 tokens per step, got 17")

    return GuardTarget(fn=target.fn, inputs=target.inputs, before_step=before_step)


def wrong_shape(ctx: TargetContext) -> dict:
    """Returns the wrong thing (for the loading tests)."""
    return {"fn": None}
